//! The web console at `/console/`: three static files compiled into the binary (no CDN, no
//! request to another origin; it works offline), served with a Content-Security-Policy that
//! allows only this origin's own script and style and no inline code. The page talks to the
//! public API with the user's own token, like any other client: there is no endpoint for it.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// No inline script or style, nothing from another origin, no framing, no form posts away.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // The assets change with the binary; a browser revalidates rather than keep an old one.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `GET /console/`.
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

/// `GET /console/console.js`.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /console/console.css`.
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// `GET /` and `GET /console`: to the console.
pub async fn to_console() -> Redirect {
    Redirect::to("/console/")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page loads its script and style from this origin only, and holds no inline code
    /// that the policy would refuse.
    #[test]
    fn the_page_has_no_inline_code_and_no_other_origin() {
        assert!(INDEX.contains(r#"<script src="console.js" defer></script>"#));
        // No inline event handler (` onclick=`, ` onload=`...) anywhere in the markup.
        let handler = INDEX.split(" on").skip(1).any(|rest| {
            let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
            !name.is_empty() && rest[name.len()..].starts_with('=')
        });
        assert!(!handler, "an inline event handler in index.html");
        for text in [INDEX, SCRIPT, STYLE] {
            assert!(!text.contains("http://") && !text.contains("https://"));
            assert!(!text.contains("style=\""));
        }
        assert!(!SCRIPT.contains("innerHTML") && !SCRIPT.contains("eval("));
        assert_eq!(INDEX.matches("<script").count(), 1);
    }
}
