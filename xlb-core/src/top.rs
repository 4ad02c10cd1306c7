//! `xlb top`: a live terminal view of services and real servers — health, counts,
//! rates and a sparkline of each real's recent traffic — refreshed in place from the
//! daemon's API. Plain ANSI through crossterm: works in any terminal, over SSH too.
use std::{
    io::IsTerminal,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use ratatui::{
    Frame,
    crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
    layout::{Constraint, Layout},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Cell, Paragraph, Row, Table, TableState},
};

use crate::{
    api::{self, Reply, Request},
    observe::{Health, TrafficHistory, real_health, service_label},
    ops::ServiceView,
};

/// How many refreshes of traffic the sparklines can show.
const HISTORY: usize = 120;
/// Eight heights of a sparkline bar; a blank is no traffic.
const BARS: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// Frames per second by what the fast path did with them, between two refreshes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct VerdictRates {
    forwarded: f64,
    passed: f64,
    dropped: f64,
}

/// What the view shows: the latest listing and what was measured between refreshes.
pub struct Top {
    every: Duration,
    services: Vec<ServiceView>,
    history: TrafficHistory,
    last_counters: Option<(Instant, Vec<(String, u64)>)>,
    verdicts: VerdictRates,
    error: Option<String>,
    scroll: usize,
}

impl Top {
    /// A view refreshed every `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            services: Vec::new(),
            history: TrafficHistory::new(HISTORY),
            last_counters: None,
            verdicts: VerdictRates::default(),
            error: None,
            scroll: 0,
        }
    }

    /// Takes a new listing and verdict counters, read at `now`.
    pub fn update(&mut self, services: Vec<ServiceView>, counters: Vec<(String, u64)>, now: Instant) {
        self.history.record(&services, now);
        if let Some((then, before)) = &self.last_counters {
            let secs = now.duration_since(*then).as_secs_f64();
            let per_sec = |prefix: &str| {
                let sum = |list: &[(String, u64)]| list.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v).sum::<u64>();
                if secs > 0.0 { sum(&counters).saturating_sub(sum(before)) as f64 / secs } else { 0.0 }
            };
            self.verdicts = VerdictRates { forwarded: per_sec("tx_"), passed: per_sec("pass_"), dropped: per_sec("drop_") };
        }
        self.last_counters = Some((now, counters));
        self.services = services;
        self.error = None;
    }

    /// Keeps the last listing on screen and says why it is not refreshed.
    pub fn fail(&mut self, error: &anyhow::Error) {
        self.error = Some(format!("{error:#}"));
    }

    /// Reads the daemon's listing and counters through its API socket.
    pub fn refresh(&mut self, socket: &Path) -> Result<()> {
        let Reply::Services(services) = api::call(socket, &Request::List)? else { bail!("the daemon answered List with something else") };
        let Reply::Counters(counters) = api::call(socket, &Request::Counters)? else {
            bail!("the daemon answered Counters with something else")
        };
        self.update(services, counters, Instant::now());
        Ok(())
    }

    fn scroll_by(&mut self, delta: isize) {
        let rows: usize = self.services.iter().map(|s| 1 + s.reals.len()).sum();
        self.scroll = self.scroll.saturating_add_signed(delta).min(rows.saturating_sub(1));
    }

    pub fn draw(&self, frame: &mut Frame) {
        let [header, table] = Layout::vertical([Constraint::Length(2), Constraint::Fill(1)]).areas(frame.area());
        frame.render_widget(Paragraph::new(self.header()), header);

        let widths = [
            Constraint::Length(24),
            Constraint::Length(7),
            Constraint::Length(6),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(8),
            Constraint::Fill(1),
        ];
        let fixed: u16 = widths.iter().map(|w| if let Constraint::Length(n) = w { *n + 1 } else { 0 }).sum();
        let spark_width = usize::from(table.width.saturating_sub(fixed)).clamp(1, HISTORY);
        let titles = ["Service / real", "Health", "Weight", "Active", "InAct", "Conn/s", "Pkt/s", "Bytes/s"];
        let head = Row::new(titles.into_iter().map(Cell::from).chain([Cell::from("Pkt/s trend")]))
            .style(Style::new().add_modifier(Modifier::REVERSED));
        let rows = self.services.iter().flat_map(|s| self.service_rows(s, spark_width));
        let mut state = TableState::new().with_offset(self.scroll);
        frame.render_stateful_widget(Table::new(rows, widths).header(head), table, &mut state);
    }

    fn header(&self) -> Vec<Line<'static>> {
        let reals: usize = self.services.iter().map(|s| s.reals.len()).sum();
        let v = self.verdicts;
        let summary = format!(
            "xlb top · {} service{}, {reals} real{} · frames/s: forwarded {}, passed {}, dropped {}",
            self.services.len(),
            plural(self.services.len()),
            plural(reals),
            human(v.forwarded),
            human(v.passed),
            human(v.dropped)
        );
        let second = match &self.error {
            Some(e) => Line::from(Span::styled(format!("daemon: {e}"), Style::new().fg(Color::Red))),
            None => Line::from(format!("every {} s · ↑/↓ scroll · q quits", self.every.as_secs_f64())),
        };
        vec![Line::from(Span::styled(summary, Style::new().add_modifier(Modifier::BOLD))), second]
    }

    fn service_rows(&self, s: &ServiceView, spark_width: usize) -> Vec<Row<'static>> {
        let rates: Vec<_> = s.reals.iter().map(|r| self.history.latest(s.id, r.address)).collect();
        let up = s.reals.iter().filter(|r| real_health(r) == Health::Up).count();
        let total = |f: fn(&crate::ops::RealView) -> u64| s.reals.iter().map(f).sum::<u64>().to_string();
        let mut rows = vec![
            Row::new([
                Cell::from(format!("{} {}", service_label(&s.id), s.scheduler)),
                Cell::from(format!("{up}/{} up", s.reals.len())),
                Cell::from(""),
                Cell::from(total(|r| r.active_conns)),
                Cell::from(total(|r| r.inactive_conns)),
                Cell::from(human(rates.iter().map(|r| r.cps).sum())),
                Cell::from(human(rates.iter().map(|r| r.pps).sum())),
                Cell::from(human(rates.iter().map(|r| r.bps).sum())),
            ])
            .style(Style::new().add_modifier(Modifier::BOLD)),
        ];
        for (r, rate) in s.reals.iter().zip(&rates) {
            let health = real_health(r);
            let colour = match health {
                Health::Up => Color::Green,
                Health::Down => Color::Red,
                Health::Unknown => Color::DarkGray,
            };
            let pps: Vec<f64> = self.history.series(s.id, r.address).iter().map(|x| x.pps).collect();
            rows.push(Row::new([
                Cell::from(format!("  → {}", r.address)),
                Cell::from(Span::styled(health.name(), Style::new().fg(colour))),
                Cell::from(r.weight.to_string()),
                Cell::from(r.active_conns.to_string()),
                Cell::from(r.inactive_conns.to_string()),
                Cell::from(human(rate.cps)),
                Cell::from(human(rate.pps)),
                Cell::from(human(rate.bps)),
                Cell::from(Span::styled(sparkline(&pps, spark_width), Style::new().fg(Color::Cyan))),
            ]));
        }
        rows
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// A rate in at most 5 characters: 0, 12, 999, 1.2K, 45.6M.
fn human(v: f64) -> String {
    let mut v = v.max(0.0);
    for unit in ["", "K", "M", "G"] {
        if v < 999.5 {
            return if unit.is_empty() { format!("{v:.0}") } else { format!("{v:.1}{unit}") };
        }
        v /= 1000.0;
    }
    format!("{v:.1}T")
}

/// The last `width` values as bars scaled to their maximum, newest at the right.
fn sparkline(values: &[f64], width: usize) -> String {
    let shown = &values[values.len().saturating_sub(width)..];
    let max = shown.iter().copied().fold(0.0, f64::max);
    shown
        .iter()
        .map(|&v| if max > 0.0 && v > 0.0 { BARS[((v / max * 8.0).ceil() as usize).clamp(1, 8)] } else { BARS[0] })
        .collect()
}

/// Runs the view on this terminal until q, Esc or Ctrl-C.
pub fn run(socket: &Path, every: Duration) -> Result<()> {
    if !std::io::stdout().is_terminal() {
        bail!("xlb top needs a terminal (for a one-off listing: xlb list --rate)");
    }
    let mut top = Top::new(every);
    // A daemon that is not there is an error before the screen is taken over.
    top.refresh(socket)?;
    let mut terminal = ratatui::try_init().context("setting up the terminal")?;
    let result = (|| -> Result<()> {
        let mut next = Instant::now() + every;
        loop {
            terminal.draw(|f| top.draw(f))?;
            if event::poll(next.saturating_duration_since(Instant::now()))? {
                match event::read()? {
                    Event::Key(k) if k.kind == KeyEventKind::Press => match k.code {
                        KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => return Ok(()),
                        KeyCode::Up => top.scroll_by(-1),
                        KeyCode::Down => top.scroll_by(1),
                        _ => {}
                    },
                    _ => {}
                }
            }
            if Instant::now() >= next {
                if let Err(e) = top.refresh(socket) {
                    top.fail(&e);
                }
                next = Instant::now() + every;
            }
        }
    })();
    ratatui::restore();
    result
}

#[cfg(test)]
mod tests {
    use ratatui::{Terminal, backend::TestBackend, buffer::Buffer};

    use super::*;
    use crate::observe::tests::{real, web_service};

    fn render(top: &Top, width: u16, height: u16) -> Buffer {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|f| top.draw(f)).unwrap();
        terminal.backend().buffer().clone()
    }

    fn text_lines(buffer: &Buffer) -> Vec<String> {
        let area = buffer.area;
        (0..area.height)
            .map(|y| (0..area.width).map(|x| buffer[(x, y)].symbol()).collect::<String>().trim_end().to_string())
            .collect()
    }

    #[test]
    fn numbers_fit_their_columns() {
        assert_eq!([0.0, 12.4, 999.0, 1234.0, 45_600_000.0].map(human), ["0", "12", "999", "1.2K", "45.6M"]);
    }

    #[test]
    fn sparklines_scale_to_their_maximum_newest_last() {
        assert_eq!(sparkline(&[0.0, 1.0, 4.0, 8.0], 10), " ▁▄█");
        assert_eq!(sparkline(&[8.0, 0.0, 2.0, 8.0], 3), " ▂█", "only the last `width` values");
        assert_eq!(sparkline(&[0.0, 0.0], 5), "  ");
    }

    #[test]
    fn renders_services_reals_rates_health_and_sparklines() {
        let t0 = Instant::now();
        let mut top = Top::new(Duration::from_secs(1));
        let counters = |tx: u64, drop: u64| vec![("tx_dr".to_string(), tx), ("drop_no_real".to_string(), drop), ("pass_not_vip".to_string(), 7)];
        // Three refreshes one second apart: rs1 sends 10 then 40 packets, rs2 20 then 20.
        let mut unresolved = real(12, 0, 0, 0);
        unresolved.mac = None;
        top.update(vec![web_service(vec![real(11, 0, 0, 0), unresolved.clone()])], counters(0, 0), t0);
        let rs2 = |conns, packets, bytes| {
            let mut r = unresolved.clone();
            (r.conns, r.packets, r.bytes) = (conns, packets, bytes);
            r
        };
        top.update(vec![web_service(vec![real(11, 2, 10, 1000), rs2(4, 20, 3000)])], counters(30, 0), t0 + Duration::from_secs(1));
        top.update(vec![web_service(vec![real(11, 6, 50, 5000), rs2(8, 40, 6000)])], counters(90, 3), t0 + Duration::from_secs(2));

        let buffer = render(&top, 100, 7);
        let lines = text_lines(&buffer);
        let expected = [
            "xlb top · 1 service, 2 reals · frames/s: forwarded 60, passed 0, dropped 3",
            "every 1 s · ↑/↓ scroll · q quits",
            "Service / real           Health  Weight Active  InAct   Conn/s  Pkt/s   Bytes/s  Pkt/s trend",
            "tcp:10.99.0.100:80 rr    1/2 up         2       4       8       60      7.0K",
            "  → 10.99.0.11           up      1      1       2       4       40      4.0K     ▂█",
            "  → 10.99.0.12           unknown 1      1       2       4       20      3.0K     ██",
            "",
        ];
        assert_eq!(lines, expected, "\n{}", lines.join("\n"));
        // Health in colour: rs1 (row 4) up in green, rs2 (row 5) unknown in grey.
        assert_eq!((buffer[(25, 4)].fg, buffer[(25, 5)].fg), (Color::Green, Color::DarkGray));
        assert_eq!(buffer[(81, 4)].fg, Color::Cyan, "sparkline");
    }

    #[test]
    fn scrolling_moves_the_rows_under_the_header() {
        let mut top = Top::new(Duration::from_secs(1));
        top.update(vec![web_service(vec![real(11, 0, 0, 0), real(12, 0, 0, 0)])], Vec::new(), Instant::now());
        top.scroll_by(2);
        let lines = text_lines(&render(&top, 100, 5));
        assert!(lines[3].starts_with("  → 10.99.0.12"), "{lines:#?}");
        top.scroll_by(10);
        let lines = text_lines(&render(&top, 100, 5));
        assert!(lines[3].starts_with("  → 10.99.0.12"), "scrolling stops at the last row: {lines:#?}");
        top.scroll_by(-10);
        let lines = text_lines(&render(&top, 100, 5));
        assert!(lines[3].starts_with("tcp:10.99.0.100:80 rr"), "{lines:#?}");
    }
}
