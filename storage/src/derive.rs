//! The hook through which the store turns spans into calls.
//!
//! The store feeds every acknowledged batch of spans, in WAL order, to one `CallDeriver` on a
//! thread of its own, off the acknowledgement path. At each flush it asks for the halves still
//! waiting for their partner and saves them with the segments, under the same manifest commit:
//! on start the deriver is restored from that state and the WAL after it is fed again, so
//! every call is derived once, whatever crashed when.
//!
//! The halves are saved a part at a time: each half is written once, in the part of the
//! first checkpoint it waits at, and every checkpoint writes an index of which halves of
//! which parts still wait. A flush writes the new part and the index, not every half.

use std::time::Instant;

use arrow::record_batch::RecordBatch;

use crate::CallRow;

/// The waiting halves at a checkpoint.
#[derive(Debug, Default)]
pub struct PendingState {
    /// The halves that began to wait since the last checkpoint and still wait, as a new part
    /// (its id and bytes); `None` when there are none.
    pub new_part: Option<(u64, Vec<u8>)>,
    /// Which halves of which parts still wait.
    pub index: Vec<u8>,
    /// The parts the index names, the new one included.
    pub parts: Vec<u64>,
}

pub trait CallDeriver: Send + 'static {
    /// Restores the waiting halves of a [`PendingState`]: its index and the parts it names.
    fn restore(&mut self, index: &[u8], parts: &[(u64, Vec<u8>)]) -> Result<(), String>;

    /// Takes a batch of spans (the `spans` schema).
    fn spans(&mut self, batch: &RecordBatch, now: Instant);

    /// Settles halves that have waited long enough at `now`.
    fn expire(&mut self, now: Instant);

    /// Calls derived since the last take. The store makes them a `calls` batch and gives
    /// its followers the rows as well, so that they need not read them back from the batch.
    fn take_calls(&mut self) -> Vec<CallRow>;

    /// Client calls that began to wait for their server half since the last take, each as
    /// its client alone tells it: for followers that cannot wait for pairing (the
    /// breakers). Never stored: each is derived again when it pairs or its wait ends, in a
    /// later [`CallDeriver::take_calls`].
    fn take_unpaired_calls(&mut self) -> Vec<CallRow> {
        Vec::new()
    }

    /// The halves still waiting, for [`CallDeriver::restore`]. A part it returns is named by
    /// the indexes that follow until its halves are gone, and is never returned again.
    fn pending(&mut self) -> PendingState;

    /// Halves left alone here whose partner another node sharing the bucket may hold, taken
    /// since the last take, encoded for [`CallDeriver::remote_answers`]. Taken with each
    /// checkpoint, so that they reach the bucket with the flush that drops them.
    fn take_orphans(&mut self) -> Vec<u8> {
        Vec::new()
    }

    /// Takes the orphans another node wrote: those whose partner waits here are calls; the
    /// rest are for other nodes.
    fn remote_answers(&mut self, _orphans: &[u8], _now: Instant) -> Result<(), String> {
        Ok(())
    }

    /// About how much memory the deriver holds (waiting halves and what it remembers), for
    /// the memory budget. Asked after every batch: it must be cheap.
    fn memory_bytes(&self) -> usize {
        0
    }
}
