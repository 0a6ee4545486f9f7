//! Who owns what, as the group coordinator sees it: the assignment watchdog asks the brokers for
//! the group's members and reads each member's assignment, so that it can tell a partition no
//! member owns from one an idle member owns.
//!
//! Each member's assignment is the consumer protocol's `Assignment` (Apache Kafka,
//! `ConsumerProtocolAssignment.json`): `version: i16`, then an array (`i32` count) of
//! `topic: string (i16 length, UTF-8)` with an array (`i32` count) of `partition: i32`, then
//! `user_data: bytes (i32 length, -1 for null)`; version 1 and later may add fields after
//! these, which are ignored. All integers are big-endian. Anything that does not parse, or a
//! group that is not `Stable`, makes the ownership unknown: the watchdog then falls back to
//! watching the high watermarks grow.
use std::{collections::HashSet, time::Duration};

use rdkafka::consumer::{Consumer, StreamConsumer};

/// `(topic, partition)` pairs.
pub(crate) type Owned = HashSet<(String, i32)>;

/// The partitions any member of `group` owns; `None` when that is not known for sure: no
/// answer, the group is rebalancing, a member's assignment does not parse, or no member's
/// assignment is `mine` (this member's own assignment), so that the coordinator's view is not
/// the one this member lives in (a member stuck outside the group's generation).
pub(crate) fn owned_by_group(
    consumer: &StreamConsumer,
    group: &str,
    mine: &Owned,
    timeout: Duration,
) -> Option<Owned> {
    let list = consumer.fetch_group_list(Some(group), timeout).ok()?;
    let info = list.groups().iter().find(|g| g.name() == group)?;
    if info.state() != "Stable" {
        return None;
    }
    let assignments: Vec<Owned> = info
        .members()
        .iter()
        .map(|m| Some(parse_assignment(m.assignment()?)?.into_iter().collect()))
        .collect::<Option<_>>()?;
    if !assignments.iter().any(|a| a == mine) {
        return None;
    }
    Some(assignments.into_iter().flatten().collect())
}

/// Reads a consumer protocol `Assignment`; `None` when the bytes are not one (an empty
/// assignment is `None` too: some brokers send nothing for a member without partitions, and
/// nothing cannot be told from "not known").
pub(crate) fn parse_assignment(bytes: &[u8]) -> Option<Vec<(String, i32)>> {
    let mut r = Reader(bytes);
    let version = r.i16()?;
    if version < 0 {
        return None;
    }
    let topics = r.count()?;
    let mut owned = Vec::new();
    for _ in 0..topics {
        let len = usize::try_from(r.i16()?).ok()?;
        let topic = std::str::from_utf8(r.take(len)?).ok()?.to_string();
        let partitions = r.count()?;
        for _ in 0..partitions {
            owned.push((topic.clone(), r.i32()?));
        }
    }
    // user_data: bytes, length -1 for null; whatever follows belongs to later versions.
    let user_data = r.i32()?;
    if user_data > 0 {
        r.take(user_data as usize)?;
    }
    Some(owned)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    /// An array count: never negative here, and never more elements than bytes left.
    fn count(&mut self) -> Option<usize> {
        let n = usize::try_from(self.i32()?).ok()?;
        (n <= self.0.len()).then_some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(version: i16, topics: &[(&str, &[i32])], user_data: Option<&[u8]>) -> Vec<u8> {
        let mut b = version.to_be_bytes().to_vec();
        b.extend((topics.len() as i32).to_be_bytes());
        for (topic, partitions) in topics {
            b.extend((topic.len() as i16).to_be_bytes());
            b.extend(topic.as_bytes());
            b.extend((partitions.len() as i32).to_be_bytes());
            for p in *partitions {
                b.extend(p.to_be_bytes());
            }
        }
        match user_data {
            Some(data) => {
                b.extend((data.len() as i32).to_be_bytes());
                b.extend(data);
            }
            None => b.extend((-1i32).to_be_bytes()),
        }
        b
    }

    #[test]
    fn assignments_of_every_version_and_user_data_are_read() {
        let two = assignment(0, &[("pay", &[0, 2]), ("ref", &[1])], None);
        let expected = vec![("pay".to_string(), 0), ("pay".to_string(), 2), ("ref".to_string(), 1)];
        assert_eq!(parse_assignment(&two), Some(expected.clone()));
        let mut later = assignment(3, &[("pay", &[0, 2]), ("ref", &[1])], Some(b"sticky"));
        later.extend([0, 0, 0, 7]); // a field of a later version
        assert_eq!(parse_assignment(&later), Some(expected));
        assert_eq!(parse_assignment(&assignment(1, &[], Some(b""))), Some(vec![]));
    }

    #[test]
    fn bytes_that_are_not_an_assignment_are_unknown() {
        let good = assignment(0, &[("pay", &[0, 1, 2])], Some(b"data"));
        for cut in 0..good.len() {
            assert_eq!(parse_assignment(&good[..cut]), None, "cut at {cut}");
        }
        let mut huge_count = good.clone();
        huge_count[2..6].copy_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(parse_assignment(&huge_count), None);
        let mut negative = good.clone();
        negative[2..6].copy_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(parse_assignment(&negative), None);
        let mut not_utf8 = good;
        not_utf8[8] = 0xff;
        assert_eq!(parse_assignment(&not_utf8), None);
        assert_eq!(parse_assignment(&[0xff, 0xff, 0, 0, 0, 0]), None);
    }
}
