//! Which particles a rank holds: P contiguous shares of the global population, and the parts
//! of each group (docs/steering.md `groups`) a share covers. A group may span ranks.

use std::ops::Range;

/// The global indices rank `rank` of `size` holds: `[⌊total·r/P⌋, ⌊total·(r+1)/P⌋)`, so shares
/// differ by at most one particle and rank order is global order.
pub fn share(total: usize, size: usize, rank: usize) -> Range<usize> {
    let at = |r: usize| ((total as u128 * r as u128) / size as u128) as usize;
    at(rank)..at(rank + 1)
}

/// The rank holding global index `index` (`index < total`).
pub fn owner(total: usize, size: usize, index: usize) -> usize {
    // share(r).start ≤ index for r ≤ answer: the largest such r.
    let (mut lo, mut hi) = (0usize, size - 1);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if share(total, size, mid).start <= index {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// The groups a share `[start, end)` touches (empty for an empty share), groups of `n`.
pub fn groups_of(range: &Range<usize>, n: usize) -> Range<usize> {
    if range.is_empty() {
        return 0..0;
    }
    range.start / n..(range.end - 1) / n + 1
}

/// The part of group `g` inside `range`, as global indices.
pub fn segment(range: &Range<usize>, n: usize, g: usize) -> Range<usize> {
    range.start.max(g * n)..range.end.min((g + 1) * n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_tile_the_population_and_owner_inverts_them() {
        for total in [1usize, 2, 3, 7, 100, 4097] {
            for size in 1..=5 {
                let mut next = 0;
                for r in 0..size {
                    let s = share(total, size, r);
                    assert_eq!(s.start, next);
                    assert!(s.len() + 1 >= total / size && s.len() <= total.div_ceil(size));
                    for i in s.clone() {
                        assert_eq!(owner(total, size, i), r, "total {total} size {size} i {i}");
                    }
                    next = s.end;
                }
                assert_eq!(next, total);
            }
        }
    }

    #[test]
    fn segments_split_a_share_at_group_boundaries() {
        let r = 5..17;
        assert_eq!(groups_of(&r, 4), 1..5);
        let segs: Vec<_> = groups_of(&r, 4).map(|g| segment(&r, 4, g)).collect();
        assert_eq!(segs, vec![5..8, 8..12, 12..16, 16..17]);
        assert_eq!(groups_of(&(3..3), 4), 0..0);
    }
}
