//! An allocator that backs large allocations with transparent huge pages.
//!
//! A training step streams megabytes of activations and gradients (the
//! reference model's pooled output, 2.8 MB a batch of 128, is written and
//! read by rows 21.6 KB apart): with 4 KB pages nearly every row's read
//! misses the TLB. Linux in its common `madvise` mode backs a region with
//! 2 MB pages only when asked; this allocator asks, for allocations of 2 MB
//! or more, which it places on 2 MB boundaries and rounds up to whole 2 MB
//! pages (at most 2 MB more virtual memory each, untouched past the end).
//! Smaller allocations, and every allocation on other systems, are the
//! system allocator's as they are.
//!
//! The `keel` binary uses it; a program using the library opts in with
//! `#[global_allocator] static A: keel::device::HugePages = keel::device::HugePages;`.

use std::alloc::{GlobalAlloc, Layout, System};

/// A huge page's size: allocations from this size up are placed on huge pages.
const HUGE: usize = 2 << 20;

/// The system allocator, with allocations of [`HUGE`] bytes or more on 2 MB
/// boundaries, rounded up to whole huge pages and advised to use them.
pub struct HugePages;

/// The layout a large allocation takes: whole huge pages, on a huge page's boundary.
fn huge_layout(layout: Layout) -> Option<Layout> {
    let size = layout.size().checked_next_multiple_of(HUGE)?;
    Layout::from_size_align(size, HUGE.max(layout.align())).ok()
}

/// Whether an allocation of `layout` goes to huge pages.
fn is_large(layout: Layout) -> bool {
    cfg!(target_os = "linux") && layout.size() >= HUGE
}

/// Asks the kernel to back `size` bytes at `p` (2 MB aligned) with huge
/// pages as they are first touched; a refusal (no transparent huge pages)
/// leaves them on small pages.
fn advise(p: *mut u8, size: usize) {
    #[cfg(target_os = "linux")]
    if !p.is_null() {
        // SAFETY: `p` starts a live mapping of `size` bytes (a page multiple); the
        // advice changes only how pages are backed, never their contents.
        unsafe { libc::madvise(p.cast(), size, libc::MADV_HUGEPAGE) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (p, size);
}

// SAFETY: every allocation is the system allocator's, of a layout at least as
// large and as aligned as asked; each is freed with the layout it was made with
// (`huge_layout` of the caller's layout, which the caller passes back unchanged).
unsafe impl GlobalAlloc for HugePages {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match huge_layout(layout).filter(|_| is_large(layout)) {
            Some(huge) => {
                // SAFETY: `huge` has a non-zero size.
                let p = unsafe { System.alloc(huge) };
                advise(p, huge.size());
                p
            }
            // SAFETY: the caller's contract.
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !is_large(layout) {
            // SAFETY: the caller's contract.
            return unsafe { System.alloc_zeroed(layout) };
        }
        // Zeroed after the advice, so that the first touch takes huge pages
        // (the system's aligned zeroed allocation writes its zeros first).
        // SAFETY: the caller's contract.
        let p = unsafe { self.alloc(layout) };
        if !p.is_null() {
            // SAFETY: `p` holds at least `layout.size()` bytes.
            unsafe { std::ptr::write_bytes(p, 0, layout.size()) };
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        match huge_layout(layout).filter(|_| is_large(layout)) {
            // SAFETY: `p` was allocated by `alloc` with this same layout, so as `huge`.
            Some(huge) => unsafe { System.dealloc(p, huge) },
            // SAFETY: the caller's contract.
            None => unsafe { System.dealloc(p, layout) },
        }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract: `new_size`, rounded to the alignment, fits an isize.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !is_large(layout) && !is_large(new) {
            // SAFETY: the caller's contract; both sizes stay the system allocator's.
            return unsafe { System.realloc(p, layout, new_size) };
        }
        // Between sizes either side of HUGE, or within huge pages: a new allocation and a copy.
        // SAFETY: `new` has a non-zero size (the caller's contract).
        let q = unsafe { self.alloc(new) };
        if !q.is_null() {
            // SAFETY: both are live allocations at least this long, and distinct.
            unsafe {
                std::ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                self.dealloc(p, layout);
            }
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Large allocations start on a huge page's boundary and keep their
    /// values across growth and shrinking either side of the threshold;
    /// zeroed ones are zero.
    #[test]
    fn large_allocations_sit_on_huge_page_boundaries_and_keep_their_values() {
        let a = HugePages;
        let big = Layout::from_size_align(3 * HUGE / 2, 64).unwrap();
        // SAFETY: non-zero layouts; each pointer is freed once with its layout.
        unsafe {
            let p = a.alloc(big);
            assert!(!p.is_null());
            assert_eq!(p as usize % HUGE, 0, "a large allocation off a huge page's boundary");
            for i in (0..big.size()).step_by(4096) {
                *p.add(i) = (i / 4096) as u8;
            }
            let q = a.realloc(p, big, 3 * HUGE);
            assert_eq!(q as usize % HUGE, 0);
            assert!((0..big.size()).step_by(4096).all(|i| *q.add(i) == (i / 4096) as u8));
            let grown = Layout::from_size_align(3 * HUGE, 64).unwrap();
            let r = a.realloc(q, grown, 100);
            assert!((0..100).step_by(4096).all(|i| *r.add(i) == (i / 4096) as u8));
            let small = Layout::from_size_align(100, 64).unwrap();
            let s = a.realloc(r, small, 200);
            assert_eq!(*s, 0);
            a.dealloc(s, Layout::from_size_align(200, 64).unwrap());
            // Zeroed, also where the memory was used before.
            let used = a.alloc(big);
            std::ptr::write_bytes(used, 0xff, big.size());
            a.dealloc(used, big);
            let z = a.alloc_zeroed(big);
            assert!((z as usize).is_multiple_of(HUGE) && (0..big.size()).step_by(997).all(|i| *z.add(i) == 0));
            a.dealloc(z, big);
        }
    }
}
