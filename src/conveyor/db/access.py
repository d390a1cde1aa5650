"""Refusing what a principal may not do, as FORBIDDEN errors: every write in `db` asks here."""

from conveyor.domain.permissions import Operation, Principal, operation_refusal
from conveyor.errors import FieldPath, forbidden


def require(principal: Principal, operation: Operation) -> None:
    """Raise FORBIDDEN unless `principal`'s role allows `operation`."""
    refuse_if(operation_refusal(principal, operation))


def refuse_if(refusal: str | None, field: FieldPath | None = None) -> None:
    """Raise FORBIDDEN for a refusal the domain gave, if it gave one."""
    if refusal is not None:
        raise forbidden(refusal, field)
