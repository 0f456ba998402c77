//! Extractors that reject with ordo's error body instead of axum's plain-text ones.

use crate::error::ApiError;
use axum::extract::{FromRequest, FromRequestParts};

/// A JSON body; malformed JSON, wrong types, unknown fields, a wrong content type and an
/// oversized body all become [`ApiError`]s.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

/// Query parameters, rejected with the error body.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// Path parameters, rejected with the error body.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);
