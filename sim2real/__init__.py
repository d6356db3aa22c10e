"""sim2real: robot vision from simulation to a real robot.

The heavy parts (torch models, the runtime) are imported lazily so that ``import sim2real``
stays cheap, e.g. in env worker processes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sim2real.version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from sim2real.deploy.policy import Policy
    from sim2real.perception.encoder import Encoder

__all__ = ["Encoder", "Policy", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "Encoder":
        from sim2real.perception.encoder import Encoder

        return Encoder
    if name == "Policy":
        from sim2real.deploy.policy import Policy

        return Policy
    raise AttributeError(f"module 'sim2real' has no attribute {name!r}")
