//! The hook through which the store turns spans into calls.
//!
//! The store feeds every acknowledged batch of spans, in WAL order, to one `CallDeriver` on a
//! thread of its own, off the acknowledgement path. At each flush it asks for the halves still
//! waiting for their partner and saves them with the segments, under the same manifest commit:
//! on start the deriver is restored from that state and the WAL after it is fed again, so
//! every call is derived once, whatever crashed when.

use std::time::Instant;

use arrow::record_batch::RecordBatch;

use crate::CallRow;

pub trait CallDeriver: Send + 'static {
    /// Restores the waiting halves that [`CallDeriver::pending`] encoded.
    fn restore(&mut self, pending: &[u8]) -> Result<(), String>;

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

    /// The halves still waiting, encoded for [`CallDeriver::restore`].
    fn pending(&self) -> Vec<u8>;

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
