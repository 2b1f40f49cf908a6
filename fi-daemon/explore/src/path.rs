//! Endpoints: request paths with their ids taken out, so that `/users/42` and `/users/43`
//! are one endpoint (of the call graph, and of an exploration's call sites).

/// A path without its query, with segments that look like ids replaced by `{id}`, so that
/// `/users/42` and `/users/43` are one endpoint.
pub fn normalize(path: &str) -> String {
    // Absolute form: keep only the path part.
    let path = match path.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => path,
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    if path.is_empty() {
        return "/".to_owned();
    }
    path.split('/')
        .map(|segment| {
            if looks_like_id(segment) {
                "{id}"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn looks_like_id(segment: &str) -> bool {
    let len = segment.len();
    if len == 0 {
        return false;
    }
    let digits = segment.bytes().all(|b| b.is_ascii_digit());
    let hex = segment.bytes().all(|b| b.is_ascii_hexdigit());
    let uuid = len == 36
        && segment.bytes().enumerate().all(|(i, b)| {
            if [8, 13, 18, 23].contains(&i) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        });
    digits || (hex && len >= 16) || uuid
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn ids_and_queries_are_normalized_away() {
        assert_eq!(normalize("/users/42?x=1"), "/users/{id}");
        assert_eq!(
            normalize("/orders/123e4567-e89b-12d3-a456-426614174000/items"),
            "/orders/{id}/items"
        );
        assert_eq!(normalize("/blob/0123456789abcdef0123"), "/blob/{id}");
        assert_eq!(
            normalize("/v1/cafe"),
            "/v1/cafe",
            "short hex words are names"
        );
        assert_eq!(normalize("/"), "/");
        assert_eq!(normalize(""), "/");
        assert_eq!(normalize("*"), "*");
        assert_eq!(normalize("http://b:81/p/7?q"), "/p/{id}");
        assert_eq!(normalize("http://b:81"), "/");
    }
}
