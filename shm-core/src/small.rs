//! Short lists of the hot paths without heap allocation.
//!
//! A SEND or RECV usually carries one vector, one destination and no
//! handles or fds; allocating a `Vec` for each of those lists cost more
//! than the rest of the bookkeeping. `Small` keeps up to `N` items inline
//! and moves to the heap only beyond that.

use core::ops::{Deref, DerefMut};

pub(crate) enum Small<T: Copy + Default, const N: usize> {
    Inline([T; N], usize),
    Heap(Vec<T>),
}

impl<T: Copy + Default, const N: usize> Small<T, N> {
    /// An empty list that will hold `expected` items (on the heap if
    /// they do not fit inline).
    pub(crate) fn with_capacity(expected: usize) -> Self {
        if expected <= N {
            Small::Inline([T::default(); N], 0)
        } else {
            Small::Heap(Vec::with_capacity(expected))
        }
    }

    /// `n` copies of `v`.
    pub(crate) fn filled(v: T, n: usize) -> Self {
        if n <= N {
            Small::Inline([v; N], n)
        } else {
            Small::Heap(vec![v; n])
        }
    }

    pub(crate) fn extend_from_slice(&mut self, vs: &[T]) {
        match self {
            Small::Inline(a, n) if *n + vs.len() <= N => {
                a[*n..*n + vs.len()].copy_from_slice(vs);
                *n += vs.len();
            }
            Small::Heap(h) => h.extend_from_slice(vs),
            _ => vs.iter().for_each(|&v| self.push(v)),
        }
    }

    pub(crate) fn push(&mut self, v: T) {
        match self {
            Small::Inline(a, n) if *n < N => {
                a[*n] = v;
                *n += 1;
            }
            Small::Inline(a, n) => {
                let mut h = Vec::with_capacity(2 * N + 1);
                h.extend_from_slice(&a[..*n]);
                h.push(v);
                *self = Small::Heap(h);
            }
            Small::Heap(h) => h.push(v),
        }
    }
}

impl<T: Copy + Default, const N: usize> Deref for Small<T, N> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            Small::Inline(a, n) => &a[..*n],
            Small::Heap(h) => h,
        }
    }
}

impl<T: Copy + Default, const N: usize> DerefMut for Small<T, N> {
    fn deref_mut(&mut self) -> &mut [T] {
        match self {
            Small::Inline(a, n) => &mut a[..*n],
            Small::Heap(h) => h,
        }
    }
}

impl<'a, T: Copy + Default, const N: usize> IntoIterator for &'a Small<T, N> {
    type Item = &'a T;
    type IntoIter = core::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::Small;

    #[test]
    fn keeps_order_across_the_move_to_the_heap() {
        let mut s: Small<u32, 2> = Small::with_capacity(0);
        for i in 0..5 {
            s.push(i);
        }
        assert_eq!(&*s, &[0, 1, 2, 3, 4]);
        assert!(matches!(s, Small::Heap(_)));
        let f: Small<u8, 4> = Small::filled(7, 3);
        assert_eq!(&*f, &[7, 7, 7]);
        assert!(matches!(f, Small::Inline(..)));
        let g: Small<u8, 4> = Small::filled(9, 6);
        assert_eq!(&*g, &[9; 6]);
    }

    #[test]
    fn extends_inline_across_and_on_the_heap() {
        let mut s: Small<u32, 4> = Small::with_capacity(0);
        s.extend_from_slice(&[1, 2]);
        assert!(matches!(s, Small::Inline(..)));
        s.extend_from_slice(&[3, 4, 5]);
        assert!(matches!(s, Small::Heap(_)));
        s.extend_from_slice(&[6]);
        assert_eq!(&*s, &[1, 2, 3, 4, 5, 6]);
    }
}
