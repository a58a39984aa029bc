"""Text environments for language policies: verifiable domains (domains.py), their weighted mix (mix.py)
and the one-step env (env.py). Registered as ``text`` (the mix of every domain, or ``env.kwargs.domains``)
and ``text/<domain>``."""
from __future__ import annotations

from typing import Any

from tristream.envs.text.domains import DOMAINS


def registry_entries() -> dict[str, Any]:
    def factory(domain: str | None):
        def make(**kwargs: Any):
            from tristream.envs.text.env import TextEnv
            if domain is not None:
                if "domains" in kwargs and list(kwargs["domains"]) != [domain]:
                    raise ValueError(f"env 'text/{domain}' is fixed to domain {domain!r}; got domains="
                                     f"{kwargs['domains']!r}")
                kwargs["domains"] = [domain]
            return TextEnv(**kwargs)
        return make

    return {"text": factory(None), **{f"text/{d}": factory(d) for d in DOMAINS}}
