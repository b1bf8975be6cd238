"""The Supernet explorer: an indexer of the protocol's events and a web view of the network.

``supernet explorer --rpc URL --deployment FILE --store URL`` follows the chain from the deploy
block into a database (SQLite by default, PostgreSQL by URL) and serves pages and a JSON API
from the same process (docs/explorer.md).
"""
