//! The OpenAPI 3 document, generated from the handlers' annotations.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Veza API", description = "Users, rooms, roles, join tokens, chat and the audit log of Veza."),
    paths(
        crate::auth::register, crate::auth::login, crate::auth::refresh, crate::auth::logout,
        crate::auth::totp_setup, crate::auth::totp_confirm, crate::auth::me, crate::ops::jwks,
        crate::rooms::create_room, crate::rooms::list_rooms, crate::rooms::get_room,
        crate::rooms::update_room, crate::rooms::delete_room, crate::rooms::list_members,
        crate::rooms::set_member, crate::rooms::remove_member, crate::rooms::ban,
        crate::rooms::unban, crate::rooms::join,
        crate::messages::list_messages, crate::messages::post_message,
        crate::messages::edit_message, crate::messages::delete_message,
        crate::messages::mute, crate::messages::unmute,
        crate::admin::audit_log,
        crate::rooms::live, crate::ops::healthz, crate::ops::readyz, crate::ops::quic_certificate_hash, crate::ops::metrics, crate::ops::openapi,
    ),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".to_owned());
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The document served at `/api/openapi.json`.
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
