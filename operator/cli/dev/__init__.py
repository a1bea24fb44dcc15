"""``codehub dev up`` / ``codehub dev down``: the whole product on one machine, for a newcomer.

``up`` brings up the real services (``scripts/dev-services``), the local images, an API
server and a coordinator as background processes, identities and client configuration,
and a demo workspace; it shows the demo converging and ends by printing how to use the
stack. Everything lives in the state directory (``state.py``), so ``down`` (and a second
``up``) find what the first ``up`` started.
"""

from codehub.operator.cli.dev.stack import down, up

__all__ = ["down", "up"]
