//! Reads the topic list out of a consumer's subscription metadata (so OffsetDelete can refuse
//! topics the group still reads) and the partitions out of its assignment (for the console).
//! Everything else in them stays opaque bytes.

/// Partitions kept from one assignment at most: the bytes are a client's, not the broker's.
const ASSIGNMENT_PARTITIONS_MAX: usize = 100_000;

/// The consumer protocol's big-endian fields, read off the front of a byte slice; every read
/// fails rather than run past the end.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    /// An array count; a negative one (null) is an error.
    fn count(&mut self) -> Option<usize> {
        usize::try_from(self.i32()?).ok()
    }

    fn string(&mut self) -> Option<String> {
        let len = usize::try_from(self.i16()?).ok()?;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
}

/// The topics in a `consumer` protocol subscription (ConsumerProtocolSubscription v0+), or
/// `None` if the bytes are not one.
pub(crate) fn subscribed_topics(metadata: &[u8]) -> Option<Vec<String>> {
    // Layout shared by every version: version i16, topics array (i32 count, i16-length strings).
    let mut fields = Fields(metadata);
    let _version = fields.i16()?;
    let count = fields.count()?;
    let mut topics = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        topics.push(fields.string()?);
    }
    Some(topics)
}

/// The topics and partitions of a `consumer` protocol assignment (ConsumerProtocolAssignment
/// v0+: version, then an array of topic name and partition array), or `None` if the bytes are
/// not one or hold more than [`ASSIGNMENT_PARTITIONS_MAX`] partitions.
pub(crate) fn assigned_partitions(assignment: &[u8]) -> Option<Vec<(String, Vec<i32>)>> {
    let mut fields = Fields(assignment);
    let _version = fields.i16()?;
    let topics = fields.count()?;
    let mut out = Vec::with_capacity(topics.min(1024));
    let mut total = 0usize;
    for _ in 0..topics {
        let topic = fields.string()?;
        let count = fields.count()?;
        total = total.saturating_add(count);
        if total > ASSIGNMENT_PARTITIONS_MAX {
            return None;
        }
        let partitions = (0..count)
            .map(|_| fields.i32())
            .collect::<Option<Vec<_>>>()?;
        out.push((topic, partitions));
    }
    Some(out)
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

    #[test]
    fn reads_assignments_and_rejects_garbage() {
        let mut bytes = vec![
            0, 1, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3,
        ];
        bytes.extend_from_slice(&[0, 0, 0, 0]); // user data, ignored
        assert_eq!(
            assigned_partitions(&bytes).unwrap(),
            vec![("t".to_string(), vec![0, 3])]
        );
        assert_eq!(assigned_partitions(&[0, 1, 0x7f, 0xff, 0xff, 0xff]), None);
    }
}
