//! The in-flight byte budget: bytes of export request bodies, compressed and decompressed,
//! and of what they decode to ([`Room`]), held while they are read, decompressed and
//! decoded, added up over both transports.
//!
//! Each request charges its bytes as they arrive or inflate; a request that would take the
//! total past the budget is refused with 429 / `RESOURCE_EXHAUSTED` and a retry hint before
//! it allocates more, so many large bodies at once cannot take the server's memory.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};

use crate::error::IngestError;

/// What a refused sender is told to wait.
const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct InflightBudget {
    limit: usize,
    used: AtomicUsize,
    refused: AtomicU64,
}

impl InflightBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Requests refused for the budget so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// An empty charge, grown as the request's bytes arrive.
    pub fn charge(self: &Arc<Self>) -> Charge {
        Charge {
            budget: self.clone(),
            bytes: 0,
        }
    }

    fn take(&self, bytes: usize) -> Result<(), IngestError> {
        let taken = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            });
        if taken.is_err() {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(IngestError::InflightFull {
                limit: self.limit,
                retry_after: RETRY_AFTER,
            });
        }
        Ok(())
    }
}

/// One request's bytes in the budget, given back when it is dropped.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<InflightBudget>,
    bytes: usize,
}

impl Charge {
    /// Whether `more` bytes, with `alongside` charged elsewhere for the same request, could
    /// ever fit the budget, however many other requests give back theirs.
    pub fn could_fit(&self, more: usize, alongside: usize) -> bool {
        (self.bytes.saturating_add(more)).saturating_add(alongside) <= self.budget.limit
    }

    /// The budget's limit.
    pub fn limit(&self) -> usize {
        self.budget.limit
    }

    /// Charges `more` bytes, or refuses them if the budget has no room.
    pub fn grow(&mut self, more: usize) -> Result<(), IngestError> {
        self.budget.take(more)?;
        self.bytes += more;
        Ok(())
    }

    /// Makes the charge `bytes`, growing (which may be refused) or giving back.
    pub fn set(&mut self, bytes: usize) -> Result<(), IngestError> {
        if bytes > self.bytes {
            return self.grow(bytes - self.bytes);
        }
        self.budget
            .used
            .fetch_sub(self.bytes - bytes, Ordering::Relaxed);
        self.bytes = bytes;
        Ok(())
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// The memory a request's decoded views take (`wire::Request`), charged to the budget as
/// their lists grow.
/// A body of many tiny elements decodes to far more than it weighs (an empty span is 2
/// bytes of protobuf or JSON and 192 of view): charged, it is refused once the budget is
/// full, before it allocates more.
#[derive(Debug, Default)]
pub struct Room {
    /// `None`: not charged (views of a request decoded and charged before).
    charge: Option<Charge>,
    /// Bytes charged elsewhere for the same request (its body).
    alongside: usize,
    refused: Option<IngestError>,
}

impl Room {
    /// Charges to `charge`, for a request that holds `alongside` bytes charged elsewhere.
    pub fn charged(charge: Charge, alongside: usize) -> Self {
        Self {
            charge: Some(charge),
            alongside,
            refused: None,
        }
    }

    /// Charges `bytes`; false, from then on, once the budget has no room for them.
    pub fn take(&mut self, bytes: usize) -> bool {
        if self.refused.is_some() {
            return false;
        }
        let Some(charge) = &mut self.charge else {
            return true;
        };
        // A request that alone would pass the budget is refused for good, not for now.
        if !charge.could_fit(bytes, self.alongside) {
            let limit = charge.limit();
            self.refused = Some(IngestError::DecodedTooLarge { limit });
            return false;
        }
        match charge.grow(bytes) {
            Ok(()) => true,
            Err(error) => {
                self.refused = Some(error);
                false
            }
        }
    }

    /// Pushes `item` onto `list`, charging first what the list grows by when it is full.
    pub fn push<T>(&mut self, list: &mut Vec<T>, item: T) -> bool {
        if list.len() == list.capacity() {
            let more = list.capacity().max(4);
            if !self.take(more * size_of::<T>()) {
                return false;
            }
            list.reserve_exact(more);
        }
        list.push(item);
        true
    }

    /// The budget's refusal, once a charge was refused.
    pub fn refused(&mut self) -> Option<IngestError> {
        self.refused.take()
    }
}

/// A gRPC request body that charges its message to the budget from the message's length
/// prefix, before tonic buffers it; a compressed message is also charged the largest size it
/// may inflate to, until the decoder knows the real size.
pub struct ChargedGrpcBody<B> {
    inner: B,
    charge: Arc<Mutex<Charge>>,
    max_message_size: usize,
    /// The first bytes of the body, until the 5-byte message prefix is complete.
    prefix: Vec<u8>,
    charged: bool,
}

impl<B> ChargedGrpcBody<B> {
    pub fn new(inner: B, charge: Arc<Mutex<Charge>>, max_message_size: usize) -> Self {
        Self {
            inner,
            charge,
            max_message_size,
            prefix: Vec::with_capacity(5),
            charged: false,
        }
    }

    fn charge_prefix(&mut self, data: &[u8]) -> Result<(), IngestError> {
        let wanted = 5 - self.prefix.len();
        self.prefix
            .extend_from_slice(&data[..wanted.min(data.len())]);
        if self.prefix.len() < 5 {
            return Ok(());
        }
        self.charged = true;
        let compressed = self.prefix[0] == 1;
        let length = u32::from_be_bytes([
            self.prefix[1],
            self.prefix[2],
            self.prefix[3],
            self.prefix[4],
        ]) as usize;
        // tonic refuses a longer message itself, before reading it.
        let length = length.min(self.max_message_size);
        let inflated = if compressed { self.max_message_size } else { 0 };
        self.charge
            .lock()
            .expect("not poisoned")
            .grow(length + inflated)
    }
}

impl<B> Body for ChargedGrpcBody<B>
where
    B: Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
            None => return Poll::Ready(None),
            Some(Err(error)) => return Poll::Ready(Some(Err(error.into()))),
            Some(Ok(frame)) => frame,
        };
        let frame = frame.map_data(|mut data| data.copy_to_bytes(data.remaining()));
        if !self.charged
            && let Some(data) = frame.data_ref()
            && let Err(error) = self.charge_prefix(&data[..])
        {
            // tonic answers a body error that is a Status with that status.
            return Poll::Ready(Some(Err(Box::new(error.grpc_status()))));
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_are_refused_past_the_limit_and_given_back_when_dropped() {
        let budget = InflightBudget::new(100);
        let mut first = budget.charge();
        first.grow(60).unwrap();
        let mut second = budget.charge();
        assert!(matches!(
            second.grow(50),
            Err(IngestError::InflightFull { limit: 100, .. })
        ));
        second.grow(40).unwrap();
        assert_eq!(budget.used(), 100);
        first.set(10).unwrap();
        assert_eq!(budget.used(), 50);
        drop(first);
        drop(second);
        assert_eq!(budget.used(), 0);
        assert_eq!(budget.refused(), 1);
    }
}
