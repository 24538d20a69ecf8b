//! Reads the topic list out of a consumer's subscription metadata, so OffsetDelete can refuse
//! topics the group still reads. Everything else in the metadata stays opaque bytes.

/// The topics in a `consumer` protocol subscription (ConsumerProtocolSubscription v0+), or
/// `None` if the bytes are not one.
pub(crate) fn subscribed_topics(metadata: &[u8]) -> Option<Vec<String>> {
    // Layout shared by every version: version i16, topics array (i32 count, i16-length strings).
    let mut buf = metadata;
    let mut take = |n: usize| -> Option<&[u8]> {
        if buf.len() < n {
            return None;
        }
        let (head, tail) = buf.split_at(n);
        buf = tail;
        Some(head)
    };
    let _version = i16::from_be_bytes(take(2)?.try_into().ok()?);
    let count = i32::from_be_bytes(take(4)?.try_into().ok()?);
    let count = usize::try_from(count).ok()?;
    let mut topics = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let len = usize::try_from(i16::from_be_bytes(take(2)?.try_into().ok()?)).ok()?;
        topics.push(String::from_utf8(take(len)?.to_vec()).ok()?);
    }
    Some(topics)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_topics_and_rejects_garbage() {
        let mut m = vec![0, 1, 0, 0, 0, 2, 0, 1, b'a', 0, 2, b'b', b'c'];
        m.extend_from_slice(&[0, 0, 0, 0]); // user data, ignored
        assert_eq!(subscribed_topics(&m).unwrap(), vec!["a", "bc"]);
        assert_eq!(subscribed_topics(&[0, 1, 0]), None);
    }
}
