//! Which lines of a log chunk are new. A log is numbered from 0, and the console asks for it
//! "from the line after the last one I have" whenever it subscribes again (after a reconnect or a
//! `Resync`), so the master may resend lines the console already has, and after a lag a chunk may
//! start beyond them. This decides, for one chunk, what is delivered: exactly once, in order.

use std::ops::Range;

/// What to do with one chunk of log lines.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// New lines, starting exactly at the next line the console lacks (an overlap is trimmed).
    Fresh(Vec<String>),
    /// Nothing new: every line was delivered before (or the chunk is empty).
    Duplicate,
    /// Lines are missing between what the console has and this chunk: the chunk is dropped and
    /// the log must be asked for again from `missing.start`.
    Gap { missing: Range<u64> },
}

/// Sorts out one chunk of `lines` numbered from `first_seq`, when the console has every line
/// before `next_seq` and none after.
pub fn sort_out(next_seq: u64, first_seq: u64, lines: Vec<String>) -> Chunk {
    let end = first_seq.saturating_add(lines.len() as u64);
    if lines.is_empty() || end <= next_seq {
        return Chunk::Duplicate;
    }
    if first_seq > next_seq {
        return Chunk::Gap {
            missing: next_seq..first_seq,
        };
    }
    let already = (next_seq - first_seq) as usize;
    let mut lines = lines;
    lines.drain(..already);
    Chunk::Fresh(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(from: u64, to: u64) -> Vec<String> {
        (from..to).map(|i| format!("line {i}")).collect()
    }

    #[test]
    fn the_next_chunk_is_delivered_whole() {
        assert_eq!(sort_out(10, 10, lines(10, 15)), Chunk::Fresh(lines(10, 15)));
        assert_eq!(sort_out(0, 0, lines(0, 3)), Chunk::Fresh(lines(0, 3)));
    }

    #[test]
    fn an_overlapping_resend_after_a_reconnect_is_trimmed() {
        // The console had 0..7; the master resends from 5 (its chunk boundary).
        assert_eq!(sort_out(7, 5, lines(5, 12)), Chunk::Fresh(lines(7, 12)));
        // Overlap by all but one line.
        assert_eq!(sort_out(11, 5, lines(5, 12)), Chunk::Fresh(lines(11, 12)));
    }

    #[test]
    fn a_chunk_already_delivered_is_dropped() {
        assert_eq!(sort_out(12, 5, lines(5, 12)), Chunk::Duplicate);
        assert_eq!(sort_out(100, 0, lines(0, 3)), Chunk::Duplicate);
        assert_eq!(sort_out(3, 3, vec![]), Chunk::Duplicate);
        assert_eq!(
            sort_out(3, 9, vec![]),
            Chunk::Duplicate,
            "nothing to ask for"
        );
    }

    #[test]
    fn a_chunk_beyond_the_next_line_is_a_gap() {
        assert_eq!(
            sort_out(7, 10, lines(10, 12)),
            Chunk::Gap { missing: 7..10 }
        );
        assert_eq!(sort_out(0, 1, lines(1, 2)), Chunk::Gap { missing: 0..1 });
    }

    #[test]
    fn sequence_numbers_near_the_top_do_not_overflow() {
        assert_eq!(
            sort_out(u64::MAX, u64::MAX - 1, lines(0, 3)),
            Chunk::Duplicate
        );
        assert_eq!(
            sort_out(0, u64::MAX, lines(0, 2)),
            Chunk::Gap {
                missing: 0..u64::MAX
            }
        );
    }

    #[test]
    fn replaying_a_log_in_any_chunking_delivers_each_line_once_in_order() {
        // The whole log as the console would get it across two reconnects: every resend starts
        // at or before the line it lacks, in chunks of varying size.
        let mut have: Vec<String> = vec![];
        let feed: [(u64, u64); 7] = [(0, 4), (0, 2), (2, 9), (6, 9), (9, 9), (5, 20), (20, 21)];
        for (from, to) in feed {
            if let Chunk::Fresh(new) = sort_out(have.len() as u64, from, lines(from, to)) {
                have.extend(new);
            }
        }
        assert_eq!(have, lines(0, 21));
    }
}
