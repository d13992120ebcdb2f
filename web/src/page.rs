//! Cursor pagination: `?cursor=&limit=` in, `{items, next_cursor}` out.
//!
//! A cursor is the key of the last item of the page before, as text: a page stays right when
//! items are added or removed between requests, which offsets would not.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::WebConfig;
use crate::error::ApiError;

/// One page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Where a page starts and how long it is.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// `next_cursor` of the page before; absent for the first page.
    pub cursor: Option<String>,
    /// Items per page (default 50, at most 500 or as configured).
    pub limit: Option<usize>,
}

impl PageQuery {
    /// The page length: the default when absent, the maximum when over it; 0 is refused.
    pub fn limit(&self, config: &WebConfig) -> Result<usize, ApiError> {
        match self.limit {
            None => Ok(config.default_page.max(1)),
            Some(0) => Err(ApiError::bad_request("limit must be at least 1")),
            Some(n) => Ok(n.min(config.max_page.max(1))),
        }
    }
}

/// Cuts `items` (already in cursor order and past the cursor) to `limit`, with the cursor of
/// the next page when more remain.
pub fn paginate<T>(mut items: Vec<T>, limit: usize, key: impl Fn(&T) -> String) -> Page<T> {
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(key)
    } else {
        None
    };
    Page { items, next_cursor }
}
