//! A `tracing` subscriber that keeps every span and event, for tests asserting what the
//! library reports: the registry with a layer that copies fields out as text.
//!
//! Install it on the test's thread with [`Capture::install`] (a `#[tokio::test]` runs its
//! tasks on that thread).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::DefaultGuard;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// Field values as text: strings as they are, numbers and the rest as `Debug` prints them.
pub type Fields = BTreeMap<String, String>;

/// A span as the subscriber saw it.
#[derive(Debug, Clone)]
pub struct CapturedSpan {
    /// Its name (`transaction`, `request`, ...).
    pub name: &'static str,
    /// Its target.
    pub target: &'static str,
    /// Its level.
    pub level: Level,
    /// Every field recorded so far, at creation and after; a field never recorded is absent.
    pub fields: Fields,
    /// The index in [`Capture::spans`] of its parent span, if any.
    pub parent: Option<usize>,
    /// Whether it has closed (its last handle dropped).
    pub closed: bool,
}

/// An event as the subscriber saw it.
#[derive(Debug, Clone)]
pub struct CapturedEvent {
    /// Its target.
    pub target: &'static str,
    /// Its level.
    pub level: Level,
    /// Its fields, the message as `message`.
    pub fields: Fields,
    /// The index in [`Capture::spans`] of the span it happened in, if any.
    pub span: Option<usize>,
}

#[derive(Debug, Default)]
struct Captured {
    spans: Vec<CapturedSpan>,
    events: Vec<CapturedEvent>,
}

/// What a subscriber installed with [`Capture::install`] has seen.
#[derive(Debug, Clone, Default)]
pub struct Capture(Arc<Mutex<Captured>>);

/// The index of a span in [`Captured::spans`], kept in the span's extensions.
struct SpanIndex(usize);

impl Capture {
    /// A capture that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes a subscriber feeding this capture the default of the current thread, until the
    /// guard is dropped.
    pub fn install(&self) -> DefaultGuard {
        let subscriber = tracing_subscriber::registry().with(Layered(self.clone()));
        let guard = tracing::subscriber::set_default(subscriber);
        // A callsite first hit by a test without a subscriber, on another thread, while this
        // one was being installed, can keep the "never" interest it computed then: the
        // library's span would be invisible here. Recompute every callsite's interest now
        // that this subscriber is one of the dispatchers.
        tracing::callsite::rebuild_interest_cache();
        guard
    }

    fn lock(&self) -> MutexGuard<'_, Captured> {
        // A test that panicked while holding the lock left valid data behind.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every span so far, in the order they were created.
    pub fn spans(&self) -> Vec<CapturedSpan> {
        self.lock().spans.clone()
    }

    /// The spans named `name`, in the order they were created.
    pub fn spans_named(&self, name: &str) -> Vec<CapturedSpan> {
        self.spans()
            .into_iter()
            .filter(|span| span.name == name)
            .collect()
    }

    /// Every event so far, in the order they happened.
    pub fn events(&self) -> Vec<CapturedEvent> {
        self.lock().events.clone()
    }

    /// The span at `index` of [`Capture::spans`].
    pub fn span(&self, index: usize) -> CapturedSpan {
        self.lock().spans[index].clone()
    }

    /// Forgets everything seen so far.
    pub fn clear(&self) {
        let mut captured = self.lock();
        captured.spans.clear();
        captured.events.clear();
    }
}

/// The layer that feeds a [`Capture`].
struct Layered(Capture);

impl<S> Layer<S> for Layered
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::new();
        attrs.record(&mut FieldVisitor(&mut fields));
        let parent = span
            .parent()
            .and_then(|parent| parent.extensions().get::<SpanIndex>().map(|index| index.0));
        let mut captured = self.0.lock();
        let index = captured.spans.len();
        captured.spans.push(CapturedSpan {
            name: span.name(),
            target: span.metadata().target(),
            level: *span.metadata().level(),
            fields,
            parent,
            closed: false,
        });
        drop(captured);
        span.extensions_mut().insert(SpanIndex(index));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(index) = index_of(&ctx, id) else {
            return;
        };
        let mut captured = self.0.lock();
        values.record(&mut FieldVisitor(&mut captured.spans[index].fields));
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::new();
        event.record(&mut FieldVisitor(&mut fields));
        let span = ctx
            .event_span(event)
            .and_then(|span| span.extensions().get::<SpanIndex>().map(|index| index.0));
        self.0.lock().events.push(CapturedEvent {
            target: event.metadata().target(),
            level: *event.metadata().level(),
            fields,
            span,
        });
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let Some(index) = index_of(&ctx, &id) {
            self.0.lock().spans[index].closed = true;
        }
    }
}

fn index_of<S>(ctx: &Context<'_, S>, id: &Id) -> Option<usize>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    ctx.span(id)?
        .extensions()
        .get::<SpanIndex>()
        .map(|index| index.0)
}

/// Copies fields into a [`Fields`] map.
struct FieldVisitor<'a>(&'a mut Fields);

impl Visit for FieldVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_string(), value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
}
