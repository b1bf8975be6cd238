"""OpenAI drop-in: official OpenAI clients that pay a Supernet node, and the signed chat input.

>>> from supernet.sdk.openai_compat import openai_client
>>> client = openai_client("http://127.0.0.1:8101", key, "deployment.json")  # doctest: +SKIP
>>> client.chat.completions.create(                                         # doctest: +SKIP
...     model="smollm2-135m", messages=[{"role": "user", "content": "Hi"}])

`chat_task_input` is the one rule both sides use to turn a request body into the signed input;
`SupernetAuth` signs each request (for any httpx client); the factories need ``openai``.
"""

from supernet.sdk.openai_compat.auth import AUTH_HEADER, SupernetAuth
from supernet.sdk.openai_compat.chat_input import chat_task_input
from supernet.sdk.openai_compat.factory import async_openai_client, openai_client

__all__ = ["AUTH_HEADER", "SupernetAuth", "async_openai_client", "chat_task_input", "openai_client"]
