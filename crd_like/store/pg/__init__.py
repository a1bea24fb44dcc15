"""The parts of ``PostgresStore``: schema and migrations, reads, writes, the watch hub.

``codehub.crd_like.store.postgres`` assembles them; import the store from there.
"""
