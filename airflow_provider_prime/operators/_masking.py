"""Secrets in templated fields, handed to Airflow's masker as soon as they are rendered."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_prime._compat import mask_secret

if TYPE_CHECKING:
    from airflow.sdk import Context


class MasksRenderedSecrets(BaseOperator):
    """An operator whose rendered fields hold secrets (:meth:`secrets`), masked on rendering.

    Airflow stores the rendered fields for its Rendered Template view right after rendering,
    before ``execute`` runs, redacting what the masker knows: masking in ``execute`` would be too
    late. ``_do_render_template_fields``, not ``render_template_fields``, is the method both an
    unmapped task and a mapped task's expansion call.
    """

    def secrets(self) -> Iterable[str]:
        """The values to mask (e.g. an ``env``'s values)."""
        return ()

    def mask_secrets(self) -> None:
        for secret in self.secrets():
            mask_secret(secret)

    def _do_render_template_fields(
        self,
        parent: Any,
        template_fields: Iterable[str],
        context: Context,
        jinja_env: Any,
        seen_oids: set[int],
    ) -> None:
        super()._do_render_template_fields(parent, template_fields, context, jinja_env, seen_oids)
        self.mask_secrets()


__all__ = ["MasksRenderedSecrets"]
