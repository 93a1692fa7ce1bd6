//! One etcd `Watch` stream of the embedding API.
//!
//! A [`WatchStream`] is the driver-side end of a core watch stream
//! ([`t4_core::watch`]): requests go to the node thread as
//! [`WatchInput`]s, and the node thread routes the core's
//! [`WatchOutput`]s for this stream into its channel.
//!
//! # Flow control
//!
//! The channel itself is unbounded; the bound lives in the core, which lets a
//! stream have at most `stream_buffer_max` outputs outstanding (emitted and
//! not yet reported consumed) before its watchers stop receiving live events
//! and later catch up from history. [`WatchStream::next`] reports outputs as
//! consumed when it hands them out, every quarter of the bound (at most
//! [`CONSUMED_REPORT_BATCH_MAX`]): so a client that stops reading stops the
//! flow, and one that reads keeps it going. Fewer than a quarter unreported
//! can never stall a stream (the stall needs the whole bound outstanding),
//! and reporting every output would cost the node thread one event per
//! output: a put seen by 100 watch streams would make 100 events.

use std::sync::mpsc;

use tokio::sync::mpsc::UnboundedReceiver;

use t4_core::kv::WatchCreateRequest;
use t4_core::watch::{StreamId, WatchInput, WatchOutput};
use t4_core::Error;

use crate::driver::Event;

/// Outputs taken before they are reported consumed even though more are
/// waiting in the channel.
pub const CONSUMED_REPORT_BATCH_MAX: usize = 256;

/// Sends a stream's requests (create, cancel, progress) to the node. Cheap
/// to clone, so a transport can read client requests on one task while
/// another takes outputs from the [`WatchStream`].
#[derive(Clone, Debug)]
pub struct WatchControl {
    stream: StreamId,
    events: mpsc::Sender<Event>,
}

impl WatchControl {
    /// The stream this controls.
    #[must_use]
    pub fn stream_id(&self) -> StreamId {
        self.stream
    }

    /// etcd `WatchCreateRequest`: the answer arrives on the stream as an
    /// output with `created` (or `canceled` with the reason).
    ///
    /// # Errors
    /// Node closed.
    pub fn create(&self, req: WatchCreateRequest) -> Result<(), Error> {
        self.send(WatchInput::Create {
            stream: self.stream,
            req,
        })
    }

    /// etcd `WatchCancelRequest`: the watch ends with a `canceled` output.
    /// An unknown id is ignored (as etcd).
    ///
    /// # Errors
    /// Node closed.
    pub fn cancel(&self, watch_id: i64) -> Result<(), Error> {
        self.send(WatchInput::Cancel {
            stream: self.stream,
            watch_id,
        })
    }

    /// etcd `WatchProgressRequest`: a progress output (watch id -1) with the
    /// current revision once every watch on the stream has caught up.
    ///
    /// # Errors
    /// Node closed.
    pub fn request_progress(&self) -> Result<(), Error> {
        self.send(WatchInput::Progress {
            stream: self.stream,
        })
    }

    fn send(&self, input: WatchInput) -> Result<(), Error> {
        self.events
            .send(Event::Watch(input))
            .map_err(|_| Error::Unavailable("node is closed".into()))
    }
}

/// One etcd `Watch` stream: any number of watches, one ordered sequence of
/// outputs. Dropping it closes the stream and ends its watches. See the
/// module docs for flow control.
///
/// ```no_run
/// # async fn demo(node: t4_io_real::Node) -> Result<(), t4_io_real::Error> {
/// use t4_io_real::kv::WatchCreateRequest;
/// let mut stream = node.watch(WatchCreateRequest {
///     key: b"/config/".to_vec(),
///     range_end: b"/config0".to_vec(),
///     ..WatchCreateRequest::default()
/// }).await?;
/// while let Some(out) = stream.next().await {
///     for event in &out.events {
///         println!("{:?}", event.kv);
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct WatchStream {
    control: WatchControl,
    outputs: UnboundedReceiver<WatchOutput>,
    /// Outputs handed out and not yet reported consumed.
    unreported: usize,
    /// Report once this many are unreported: a quarter of the stream's
    /// bound, so unreported outputs alone never stall it.
    report_every: usize,
}

impl WatchStream {
    pub(crate) fn new(
        stream: StreamId,
        events: mpsc::Sender<Event>,
        outputs: UnboundedReceiver<WatchOutput>,
        stream_buffer_max: usize,
    ) -> WatchStream {
        WatchStream {
            control: WatchControl { stream, events },
            outputs,
            unreported: 0,
            report_every: (stream_buffer_max / 4).clamp(1, CONSUMED_REPORT_BATCH_MAX),
        }
    }

    /// The stream's id (unique among the node's streams).
    #[must_use]
    pub fn stream_id(&self) -> StreamId {
        self.control.stream
    }

    /// A handle for sending this stream's requests from elsewhere.
    #[must_use]
    pub fn control(&self) -> WatchControl {
        self.control.clone()
    }

    /// See [`WatchControl::create`].
    ///
    /// # Errors
    /// Node closed.
    pub fn create(&self, req: WatchCreateRequest) -> Result<(), Error> {
        self.control.create(req)
    }

    /// See [`WatchControl::cancel`].
    ///
    /// # Errors
    /// Node closed.
    pub fn cancel(&self, watch_id: i64) -> Result<(), Error> {
        self.control.cancel(watch_id)
    }

    /// See [`WatchControl::request_progress`].
    ///
    /// # Errors
    /// Node closed.
    pub fn request_progress(&self) -> Result<(), Error> {
        self.control.request_progress()
    }

    /// The next output, in order; `None` once the node has closed.
    /// Cancel-safe (an output is only taken when this returns it).
    pub async fn next(&mut self) -> Option<WatchOutput> {
        let output = self.outputs.recv().await?;
        self.unreported += 1;
        if self.unreported >= self.report_every {
            self.report_consumed();
        }
        Some(output)
    }

    fn report_consumed(&mut self) {
        let outputs = std::mem::take(&mut self.unreported);
        // A closed node needs no more flow control.
        let _ = self.control.send(WatchInput::Consumed {
            stream: self.control.stream,
            outputs,
        });
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        let _ = self.control.send(WatchInput::CloseStream {
            stream: self.control.stream,
        });
    }
}
