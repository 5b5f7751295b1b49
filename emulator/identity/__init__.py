"""Identity, sans-IO: each system's PKI, trust in provisioned certificates, JWS tokens,
and the IdMS's OpenID Connect decisions (33.180 Annex B).  Time comes in as ``now``."""

from .oidc import CLAIM_MIGRATION_PARTNER
from .oidc import GRANT_AUTHORIZATION_CODE
from .oidc import GRANT_JWT_BEARER
from .oidc import GRANT_REFRESH_TOKEN
from .oidc import GRANT_TOKEN_EXCHANGE
from .oidc import MC_SCOPES
from .oidc import TOKEN_TYPE_ACCESS_TOKEN
from .oidc import TOKEN_TYPE_JWT
from .oidc import AuthorizationRequest
from .oidc import IdentityProvider
from .oidc import MigrationProfile
from .oidc import OidcClient
from .oidc import UserAccount
from .oidc import hash_password
from .oidc import migration_profile_index
from .oidc import s256_challenge
from .pki import Credential
from .pki import issue_server_certificate
from .pki import issue_signing_certificate
from .pki import load_credential
from .pki import make_ca
from .tokens import ACCESS_TOKEN_TYP
from .tokens import ID_TOKEN_TYP
from .tokens import MAX_LEEWAY
from .tokens import MAX_TOKEN_BYTES
from .tokens import SECURITY_TOKEN_TYP
from .tokens import SigningKey
from .tokens import TokenError
from .tokens import TokenIssuer
from .tokens import TokenValidator
from .tokens import scopes_of
from .trust import TrustError
from .trust import VerificationKey
from .trust import kid_for
from .trust import verification_key

__all__ = [
    "ACCESS_TOKEN_TYP",
    "CLAIM_MIGRATION_PARTNER",
    "GRANT_AUTHORIZATION_CODE",
    "GRANT_JWT_BEARER",
    "GRANT_REFRESH_TOKEN",
    "GRANT_TOKEN_EXCHANGE",
    "ID_TOKEN_TYP",
    "MAX_LEEWAY",
    "MAX_TOKEN_BYTES",
    "MC_SCOPES",
    "SECURITY_TOKEN_TYP",
    "TOKEN_TYPE_ACCESS_TOKEN",
    "TOKEN_TYPE_JWT",
    "AuthorizationRequest",
    "Credential",
    "IdentityProvider",
    "MigrationProfile",
    "OidcClient",
    "SigningKey",
    "TokenError",
    "TokenIssuer",
    "TokenValidator",
    "TrustError",
    "UserAccount",
    "VerificationKey",
    "hash_password",
    "issue_server_certificate",
    "issue_signing_certificate",
    "kid_for",
    "load_credential",
    "make_ca",
    "migration_profile_index",
    "s256_challenge",
    "scopes_of",
    "verification_key",
]
