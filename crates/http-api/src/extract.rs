//! Extractors that reject with ordo's error body instead of axum's plain-text ones.

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use ordo_domain::{Error, ErrorKind};

/// A JSON object body; malformed JSON, another JSON value than an object, wrong types,
/// unknown fields, a wrong content type and an oversized body all become [`ApiError`]s.
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if !has_json_content_type(&request) {
            return Err(not_json());
        }
        let RawBody(bytes) = RawBody::from_request(request, state).await?;
        require_object(&bytes, false)?;
        let axum::Json(value) = axum::Json::<T>::from_bytes(&bytes)?;
        Ok(Json(value))
    }
}

/// Query parameters, rejected with the error body.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// Path parameters, rejected with the error body.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// An optional JSON body: an empty body, or the JSON `null`, is `None`; a non-empty one must be
/// JSON (`Content-Type: application/json`) and parse into `T`, with the same rejections as
/// [`Json`].
pub struct OptionalJson<T>(pub Option<T>);

impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = has_json_content_type(&request);
        let RawBody(bytes) = RawBody::from_request(request, state).await?;
        if bytes.is_empty() {
            return Ok(OptionalJson(None));
        }
        if !is_json {
            return Err(not_json());
        }
        require_object(&bytes, true)?;
        let axum::Json(value) = axum::Json::<Option<T>>::from_bytes(&bytes)?;
        Ok(OptionalJson(value))
    }
}

fn has_json_content_type(request: &Request) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(is_json_content_type)
}

fn not_json() -> ApiError {
    ApiError(Error::new(
        ErrorKind::UnsupportedMediaType,
        "the request body must be JSON (Content-Type: application/json)",
    ))
}

/// Every request body of the API is a JSON object (or, where the body is optional, `null`).
/// serde would also read a struct from an array of its fields in order (`["TH"]` for
/// `{"country": "TH"}`, `[]` for a struct whose fields all have defaults): refused here, by the
/// first byte that is not white space, before anything is parsed.
fn require_object(bytes: &[u8], null_allowed: bool) -> Result<(), ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        Some(b'{') => Ok(()),
        Some(b'n') if null_allowed => Ok(()),
        Some(b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n') | None => {
            Err(ApiError(Error::new(
                ErrorKind::InvalidArgument,
                "the request body must be a JSON object",
            )))
        }
        // Not JSON at all: serde's error says where.
        Some(_) => Ok(()),
    }
}

/// `application/json` or `application/<anything>+json`, parameters (charset) allowed.
fn is_json_content_type(value: &str) -> bool {
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The raw body bytes, within the body limit (for signed callbacks, whose signature covers the
/// exact bytes), rejected with the error body.
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(request, state)
            .await
            .map(RawBody)
            .map_err(ApiError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::is_json_content_type;

    #[test]
    fn json_content_types_are_recognised() {
        for yes in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/merge-patch+json",
        ] {
            assert!(is_json_content_type(yes), "{yes}");
        }
        for no in ["text/plain", "application/jsonx", "json", ""] {
            assert!(!is_json_content_type(no), "{no}");
        }
    }
}
