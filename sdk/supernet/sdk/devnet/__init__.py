"""The local devnet: Anvil, the deployed protocol, sample nodes, validators and users.

>>> from supernet.sdk.devnet import Devnet, DevnetConfig
>>> net = Devnet.start(DevnetConfig(port=0))      # doctest: +SKIP
>>> net.stop()                                   # doctest: +SKIP
"""

from supernet.sdk.devnet.network import Actor, Devnet, DevnetConfig, DevnetError

__all__ = ["Actor", "Devnet", "DevnetConfig", "DevnetError"]
