"""Settings shared by the SI-SdO connector and source: where the SI-SdO is and how to authenticate."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["SdoEndpoint", "verify_of"]


class SdoEndpoint(BaseModel):
    """The SI-SdO's FHIR base and how the ESSMS authenticates to it.

    ``auth``: ``oauth`` (client credentials at ``token_url``, the SI-SdO identifies the ESSMS
    from the token), ``mtls`` (the ESSMS's certificate identifies it) or ``oauth+mtls`` (both:
    the token request and every FHIR call present the certificate). ViaTrajectoire's actual
    mechanism is agreed at enrolment (see docs/viatrajectoire.md). ``ca_file``: the CA bundle
    that signs the SI-SdO's certificate, when it is not in the system store.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    base_url: str = Field(pattern=r"^https?://")
    auth: Literal["oauth", "mtls", "oauth+mtls"] = "oauth"
    token_url: str | None = Field(default=None, pattern=r"^https?://")
    scope: str | None = Field(default=None, max_length=512)
    ca_file: str | None = None
    verify_tls: bool = True
    timeout: float = Field(default=30.0, gt=0, le=300)
    token_leeway: int = Field(default=30, ge=0, le=600)

    @model_validator(mode="after")
    def _token_url(self) -> SdoEndpoint:
        if self.auth != "mtls" and not self.token_url:
            raise ValueError(f"auth {self.auth!r} needs token_url (the OAuth 2.0 token endpoint)")
        return self


def verify_of(endpoint: SdoEndpoint) -> bool | str:
    """``requests``' ``verify``: the CA bundle when given, else the system store (or off, dev only)."""
    if not endpoint.verify_tls:
        return False
    return endpoint.ca_file or True
