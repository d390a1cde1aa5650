from datetime import datetime
from typing import Self

import strawberry
from strawberry import relay

from conveyor.db import models
from conveyor.domain.check_review import review_policy_of
from conveyor.graphql.types.check import ReviewPolicyView
from conveyor.graphql.types.enums import ApprovalPolicy
from conveyor.graphql.types.node import LoadedNode


@strawberry.type(description="A step of the promotion path (dev, test, staging, prod).")
class Environment(LoadedNode):
    loader_name = "environment"

    id: relay.NodeID[int]
    name: str = strawberry.field(description="Unique name.")
    order: int = strawberry.field(description="Position on the promotion path; lower is earlier.")
    approval_policy: ApprovalPolicy = strawberry.field(
        description="Whether tasks in this environment wait for a person's approval."
    )
    developers_may_approve: bool = strawberry.field(
        description="Whether DEVELOPER tokens may approve tasks here (ADMIN and DBA always may)."
    )
    creator_may_approve: bool = strawberry.field(
        description="Whether an issue's creator may approve its own tasks here."
    )
    created_at: datetime
    updated_at: datetime
    row: strawberry.Private[models.Environment]

    @strawberry.field(
        description="How findings of checks weigh here: the defaults for its kind (errors "
        "block everywhere; data-loss rules are errors where tasks wait for approval) with "
        "what `setReviewPolicy` changed."
    )
    def review_policy(self) -> ReviewPolicyView:
        return ReviewPolicyView.from_domain(review_policy_of(self.row))

    @classmethod
    def from_row(cls, row: models.Environment) -> Self:
        return cls(
            id=row.id,
            name=row.name,
            order=row.order,
            approval_policy=row.approval_policy,
            developers_may_approve=row.developers_may_approve,
            creator_may_approve=row.creator_may_approve,
            created_at=row.created_at,
            updated_at=row.updated_at,
            row=row,
        )
