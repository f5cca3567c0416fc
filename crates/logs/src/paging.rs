//! Paging of ordered listings (`DescribeLogGroups`, `DescribeLogStreams`):
//! pure code, no IO. A page's token names the key of its last item, so the
//! next page starts after it however the listing changed meanwhile (an item
//! added or removed is neither skipped nor given twice unless its key moved).

use crate::{LogsError, MAX_DESCRIBE_LIMIT};

/// An item's position: a number (0 when the order has none), then a name.
pub(crate) type Key<'a> = (i64, &'a str);

/// The token of the page ending at `key`: `d1/<number>/<name in hex>`.
pub(crate) fn token(key: Key<'_>) -> String {
    let hex: String = key.1.bytes().map(|b| format!("{b:02x}")).collect();
    format!("d1/{}/{hex}", key.0)
}

/// The key a [`token`] names.
pub(crate) fn parse_token(token: &str) -> Result<(i64, String), LogsError> {
    let mut parts = token.split('/');
    let (Some("d1"), Some(number), Some(hex), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(LogsError::InvalidNextToken);
    };
    let number: i64 = number.parse().map_err(|_| LogsError::InvalidNextToken)?;
    if hex.len() % 2 != 0 || !hex.is_ascii() {
        return Err(LogsError::InvalidNextToken);
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| LogsError::InvalidNextToken)?;
    let name = String::from_utf8(bytes).map_err(|_| LogsError::InvalidNextToken)?;
    Ok((number, name))
}

/// One page of `items` ordered by `key` (descending if asked), starting after
/// the item `next_token` names, with at most `limit` items (0: and at most
/// [`MAX_DESCRIBE_LIMIT`]), and the token of the next page if more follow.
pub(crate) fn page<T>(
    mut items: Vec<T>,
    key: fn(&T) -> Key<'_>,
    descending: bool,
    limit: usize,
    next_token: Option<&str>,
) -> Result<(Vec<T>, Option<String>), LogsError> {
    let limit = if limit == 0 { MAX_DESCRIBE_LIMIT } else { limit.min(MAX_DESCRIBE_LIMIT) };
    let after = next_token.map(parse_token).transpose()?;
    items.sort_by(|a, b| if descending { key(b).cmp(&key(a)) } else { key(a).cmp(&key(b)) });
    if let Some((number, name)) = &after {
        let past = (*number, name.as_str());
        items.retain(|item| if descending { key(item) < past } else { key(item) > past });
    }
    let more = items.len() > limit;
    items.truncate(limit);
    let next_token = if more { items.last().map(|item| token(key(item))) } else { None };
    Ok((items, next_token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(items: &[(i64, String)]) -> Vec<&str> {
        items.iter().map(|(_, n)| n.as_str()).collect()
    }

    fn by_name(i: &(i64, String)) -> Key<'_> {
        (0, i.1.as_str())
    }

    fn by_number(i: &(i64, String)) -> Key<'_> {
        (i.0, i.1.as_str())
    }

    /// Every page of `items`, by `key`, `limit` a page.
    fn all_pages(items: &[(i64, String)], by_numbers: bool, descending: bool, limit: usize) -> Vec<Vec<String>> {
        let key = if by_numbers { by_number } else { by_name };
        let mut pages = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let (page, token) = page(items.to_vec(), key, descending, limit, next.as_deref()).unwrap();
            assert!(limit == 0 || page.len() <= limit);
            if let Some(t) = &token {
                let last = key(page.last().unwrap());
                assert_eq!(parse_token(t).unwrap(), (last.0, last.1.to_string()));
            }
            pages.push(names(&page).into_iter().map(String::from).collect());
            match token {
                Some(t) => next = Some(t),
                None => return pages,
            }
        }
    }

    #[test]
    fn pages_in_every_order() {
        let items: Vec<(i64, String)> = [(30, "b"), (10, "a/é"), (20, "c"), (10, "d"), (40, "")]
            .iter()
            .map(|(n, s)| (*n, s.to_string()))
            .collect();
        let flat = |pages: Vec<Vec<String>>| pages.concat();
        assert_eq!(flat(all_pages(&items, false, false, 2)), ["", "a/é", "b", "c", "d"]);
        assert_eq!(flat(all_pages(&items, false, true, 2)), ["d", "c", "b", "a/é", ""]);
        assert_eq!(flat(all_pages(&items, true, false, 1)), ["a/é", "d", "c", "b", ""]);
        assert_eq!(flat(all_pages(&items, true, true, 3)), ["", "b", "c", "d", "a/é"]);
        assert_eq!(all_pages(&items, false, false, 5).len(), 1, "no token when nothing follows");
        assert_eq!(all_pages(&items, false, false, 0).len(), 1, "0 is the most");
        assert_eq!(all_pages(&[], false, false, 3), vec![Vec::<String>::new()]);
        let many: Vec<(i64, String)> = (0..120).map(|i| (0, format!("{i:03}"))).collect();
        assert_eq!(all_pages(&many, false, false, 1000).iter().map(Vec::len).collect::<Vec<_>>(), [50, 50, 20]);
    }

    #[test]
    fn a_token_stays_valid_when_the_listing_changes() {
        let items = |names: &[&str]| names.iter().map(|n| (0, n.to_string())).collect::<Vec<_>>();
        let (_, token) = page(items(&["a", "b", "c"]), by_name, false, 1, None).unwrap();
        let (rest, _) = page(items(&["b", "c", "aa"]), by_name, false, 10, token.as_deref()).unwrap();
        assert_eq!(names(&rest), ["aa", "b", "c"]);
    }

    #[test]
    fn tokens() {
        for key in [(0, ""), (-5, "/aws/lambda/f"), (i64::MAX, "ü/[$LATEST]x")] {
            assert_eq!(parse_token(&token(key)).unwrap(), (key.0, key.1.to_string()));
        }
        for bad in ["", "d1", "d1/0", "d1/x/61", "d1/0/6", "d1/0/zz", "d1/0/ff", "d2/0/61", "d1/0/61/1", "d1/0/é1"] {
            assert!(matches!(parse_token(bad), Err(LogsError::InvalidNextToken)), "{bad:?}");
        }
    }
}
