//! `/`: the status page. Server-rendered SVG, no script library and nothing from a CDN (hosts
//! may be isolated); a few lines of inline script fetch `/plots` every few seconds and swap the
//! plots in, so the page is live. Each plot is a `<figure class="plot">` whose `data-points`
//! says how many values it draws (the browser test checks them).

use std::fmt::Write;

use super::cpu::MinuteProfile;
use super::history::History;
use crate::control::status::{ClientEntry, LoadStatus, ServeStatus, Status};

/// Seconds per point of the hour-long plots.
const BIN_S: u64 = 10;
const PALETTE: [&str; 8] = [
    "#2b6cb0", "#c05621", "#2f855a", "#9b2c2c", "#6b46c1", "#b7791f", "#2c7a7b", "#97266d",
];
const W: f64 = 640.0;
const H: f64 = 220.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// The whole page.
pub fn page(
    title: &str,
    status: &Status,
    history: &History,
    cpu: &MinuteProfile,
    vms: &[ClientEntry],
) -> String {
    let mut s = String::with_capacity(64 * 1024);
    let _ = write!(
        s,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 0 auto; padding: 12px; max-width: 1400px; color: #1a202c; background: #f7fafc; }}
h1 {{ font-size: 1.3rem; margin: 4px 0 8px; }}
#summary {{ font-size: .95rem; margin-bottom: 12px; }}
#plots {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 560px), 1fr)); gap: 12px; }}
figure.plot {{ margin: 0; background: #fff; border: 1px solid #e2e8f0; border-radius: 6px; padding: 8px; }}
figcaption {{ font-weight: 600; font-size: .95rem; margin-bottom: 4px; }}
figure.plot svg {{ width: 100%; height: auto; display: block; }}
.legend {{ font-size: .8rem; }} .legend span {{ margin-right: 10px; white-space: nowrap; }}
.legend i {{ display: inline-block; width: 10px; height: 10px; margin-right: 4px; border-radius: 2px; }}
.empty {{ color: #718096; font-size: .85rem; }}
svg text {{ font-size: 11px; fill: #4a5568; }}
table.vms {{ border-collapse: collapse; font-size: .85rem; width: 100%; }}
table.vms th, table.vms td {{ text-align: left; padding: 2px 8px 2px 0; border-bottom: 1px solid #edf2f7; }}
</style></head>
<body data-updates="0"><h1>{title}</h1>
<div id="live">{}</div>
<script>
// Live: the plots are re-rendered by the server; swap them in every 5 s.
let updates = 0;
async function refresh() {{
  try {{
    const r = await fetch('plots', {{ cache: 'no-store' }});
    if (r.ok) {{ document.getElementById('live').innerHTML = await r.text(); document.body.dataset.updates = ++updates; }}
  }} catch (e) {{}}
}}
setInterval(refresh, 5000);
setTimeout(refresh, 1000);
</script>
</body></html>
"#,
        plots(status, history, cpu, vms)
    );
    s
}

/// The summary line and every plot: what `/plots` returns.
pub fn plots(
    status: &Status,
    history: &History,
    cpu: &MinuteProfile,
    vms: &[ClientEntry],
) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<div id="summary">{}</div><div id="plots">"#,
        escape(&summary(status))
    );
    if let Status::Serve(st) = status {
        s += &serve_plots(st, history);
    }
    let mut reference = Vec::new();
    for (name, key) in [
        ("offset", "reference/offset"),
        ("error bound", "reference/error"),
    ] {
        let pts = series(history, key);
        if !pts.is_empty() {
            reference.push((name.to_string(), pts));
        }
    }
    let has_ticks = history.get("ticks/received").is_some();
    if matches!(status, Status::Serve(_) | Status::Listen(_)) {
        s += &line_plot(
            "reference",
            "Reference: offset and error bound",
            &reference,
            Unit::Seconds,
            false,
        );
    }
    if has_ticks {
        s += &tick_plots(history);
    }
    if let Status::Send(_) = status {
        let sent: Vec<(f64, f64)> = history
            .binned_rate("ticks/sent", BIN_S)
            .into_iter()
            .map(|(t, r)| (t as f64, r))
            .collect();
        s += &line_plot(
            "sent",
            "Ticks sent per second",
            &[("ticks".into(), sent)],
            Unit::Suffix("/s"),
            true,
        );
    }
    // Where each view's minute starts on the host's clock: its jobs' :00, the peak this
    // project spreads (a view at +15 s starts its minute at the host's :45).
    let mut starts: Vec<(String, f64)> = Vec::new();
    if let Status::Serve(st) = status {
        for v in &st.views {
            let at = (-v.offset_s).rem_euclid(60.0);
            match starts.iter_mut().find(|(_, s)| (s - at).abs() < 0.05) {
                Some((names, _)) => *names += &format!(", {}", v.name),
                None => starts.push((v.name.clone(), at)),
            }
        }
    }
    s += &cpu_plot(cpu, &starts);
    if let Status::Serve(ServeStatus {
        load: Some(load), ..
    }) = status
    {
        s += &vm_table(load, vms);
    }
    s += "</div>";
    s
}

/// VMs shown on the page at most: those with the largest part of the host's peak.
const VM_ROWS: usize = 20;

/// The VMs the host measures, those that make its busiest second first: which VM, its view,
/// its profile's peak (second of its own minute, cores) and its part of the host's peak.
fn vm_table(load: &LoadStatus, vms: &[ClientEntry]) -> String {
    let title = format!(
        "VMs by their part of the host's busiest second (predicted {:.2} cores at :{:02}; {} VMs, {} profiled)",
        load.peak_cores, load.peak_second, load.vms, load.profiled
    );
    if vms.is_empty() {
        return empty(
            "vms",
            &title,
            "no client mapped to a VM yet (VMs are matched by the MAC of their NIC)",
        );
    }
    let mut rows = String::new();
    for c in vms.iter().take(VM_ROWS) {
        let Some(vm) = &c.vm else { continue };
        let known = vm.minutes >= 2;
        let cell = |v: String| if known { v } else { "-".into() };
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&vm.name),
            escape(&c.address),
            escape(c.view.as_deref().unwrap_or("-")),
            vm.minutes,
            cell(format!(":{:02}", vm.peak_second)),
            cell(format!("{:.2}", vm.peak_cores)),
            cell(format!("{:.0} %", 100.0 * vm.share_of_host_peak)),
            escape(&format!("{} (pid {})", vm.source, vm.pid)),
        );
    }
    let body = format!(
        r#"<table class="vms"><thead><tr><th>VM</th><th>address</th><th>view</th><th>minutes</th><th>peak</th><th>cores</th><th>share</th><th>CPU time from</th></tr></thead><tbody>{rows}</tbody></table>"#
    );
    let more = vms.len().saturating_sub(VM_ROWS);
    let legend = if more > 0 {
        format!(r#"<p class="empty">and {more} more (ntp-offset clients)</p>"#)
    } else {
        String::new()
    };
    figure("vms", &title, vms.len().min(VM_ROWS), &body, &legend)
}

/// `serve`'s own plots: requests per view, clients per view, drops by reason.
fn serve_plots(st: &ServeStatus, history: &History) -> String {
    let mut s = String::new();
    let views: Vec<(String, Vec<(f64, f64)>)> = st
        .views
        .iter()
        .map(|v| {
            let pts = history
                .binned_rate(&format!("requests/{}", v.name), BIN_S)
                .into_iter()
                .map(|(t, r)| (t as f64, r))
                .collect();
            (v.name.clone(), pts)
        })
        .collect();
    s += &line_plot(
        "requests",
        "Requests per second by view (last hour)",
        &views,
        Unit::Suffix("/s"),
        true,
    );
    let bars: Vec<(String, f64)> = st
        .views
        .iter()
        .map(|v| (v.name.clone(), v.clients_last_hour as f64))
        .collect();
    s += &bar_plot("clients", "Clients per view (seen in the last hour)", &bars);
    let mut drops = Vec::new();
    for reason in history
        .keys_under("dropped/")
        .map(str::to_string)
        .collect::<Vec<_>>()
    {
        let pts: Vec<(f64, f64)> = history
            .binned_rate(&format!("dropped/{reason}"), BIN_S)
            .into_iter()
            .map(|(t, r)| (t as f64, r))
            .collect();
        if pts.iter().any(|p| p.1 > 0.0) {
            drops.push((reason, pts));
        }
    }
    s += &line_plot(
        "drops",
        "Dropped requests per second by reason",
        &drops,
        Unit::Suffix("/s"),
        true,
    );
    s
}

/// A gauge's recorded values, as points.
fn series(history: &History, key: &str) -> Vec<(f64, f64)> {
    history
        .get(key)
        .map(|v| v.iter().map(|&(t, y)| (t as f64, y)).collect())
        .unwrap_or_default()
}

/// The ticks' jitter, and ticks missed and rejected per minute.
fn tick_plots(history: &History) -> String {
    let mut s = String::new();
    s += &line_plot(
        "ticks",
        "Ticks: jitter",
        &[("jitter".to_string(), series(history, "reference/jitter"))],
        Unit::Seconds,
        true,
    );
    let mut ticks = Vec::new();
    for (name, key) in [
        ("missed per min", "ticks/missed"),
        ("rejected per min", "ticks/rejected"),
    ] {
        let pts: Vec<(f64, f64)> = history
            .binned_rate(key, 60)
            .into_iter()
            .map(|(t, r)| (t as f64, r * 60.0))
            .collect();
        ticks.push((name.to_string(), pts));
    }
    ticks.retain(|(_, p)| !p.is_empty());
    s += &line_plot(
        "tick-loss",
        "Ticks missed and rejected per minute",
        &ticks,
        Unit::Suffix(""),
        true,
    );
    s
}

fn summary(status: &Status) -> String {
    match status {
        Status::Serve(s) => format!(
            "serve: reference {} ({}), stratum {}; {} views; {} received, {} answered; up {:.0} s",
            s.reference.source,
            s.reference.state,
            s.reference.stratum,
            s.views.len(),
            s.totals.received,
            s.totals.answered,
            s.uptime_s
        ),
        Status::Listen(l) => format!("pulse listen: {}", l.line()),
        Status::Send(s) => format!(
            "pulse send: transmitter {}, {} ticks sent, {} send errors; clock {}",
            s.transmitter, s.ticks_sent, s.send_errors, s.clock
        ),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn figure(id: &str, title: &str, points: usize, body: &str, legend: &str) -> String {
    format!(
        r#"<figure class="plot" id="plot-{id}" data-points="{points}"><figcaption>{}</figcaption>{body}{legend}</figure>"#,
        escape(title)
    )
}

fn empty(id: &str, title: &str, why: &str) -> String {
    figure(
        id,
        title,
        0,
        &format!(r#"<p class="empty">{}</p>"#, escape(why)),
        "",
    )
}

fn legend(names: &[&str]) -> String {
    let mut s = String::from(r#"<div class="legend">"#);
    for (i, n) in names.iter().enumerate() {
        let _ = write!(
            s,
            r#"<span><i style="background:{}"></i>{}</span>"#,
            PALETTE[i % PALETTE.len()],
            escape(n)
        );
    }
    s + "</div>"
}

/// What a line plot's values are, for its axis labels.
#[derive(Clone, Copy)]
enum Unit {
    /// Seconds, shown in the unit that fits the axis (s, ms, µs, ns).
    Seconds,
    /// As they are, with this after the top label.
    Suffix(&'static str),
}

/// A y axis with ticks at round steps (1, 2 or 5 times a power of ten), as Grafana draws them.
struct Axis {
    lo: f64,
    hi: f64,
    step: f64,
    /// Values are multiplied by this for their labels, which end in `suffix`.
    scale: f64,
    suffix: &'static str,
}

impl Axis {
    fn new(y0: f64, y1: f64, unit: Unit) -> Axis {
        let (mut y0, mut y1) = (y0, y1);
        let span = y1 - y0;
        if span.is_nan() || span <= 1e-12 * y0.abs().max(y1.abs()).max(1e-300) {
            // One value: an axis around it.
            let pad = if y0 == 0.0 { 1.0 } else { y0.abs() / 2.0 };
            (y0, y1) = (y0 - pad, y1 + pad);
        }
        let step = nice_max((y1 - y0) / 4.0);
        let lo = (y0 / step).floor() * step;
        let hi = ((y1 / step).ceil() * step).max(lo + step);
        let (scale, suffix) = match unit {
            Unit::Suffix(s) => (1.0, s),
            Unit::Seconds => {
                let m = lo.abs().max(hi.abs());
                [(1.0, " s"), (1e3, " ms"), (1e6, " µs")]
                    .into_iter()
                    .find(|(scale, _)| m * scale >= 1.0)
                    .unwrap_or((1e9, " ns"))
            }
        };
        Axis {
            lo,
            hi,
            step,
            scale,
            suffix,
        }
    }

    /// Each tick's value and label.
    fn ticks(&self) -> Vec<(f64, String)> {
        let n = ((self.hi - self.lo) / self.step).round() as i64;
        (0..=n)
            .map(|k| {
                let v = self.lo + self.step * k as f64;
                // Not "-0" for a tick that rounding put a hair below zero.
                let shown = if v.abs() < self.step * 1e-6 {
                    0.0
                } else {
                    v * self.scale
                };
                (v, fmt_num(shown, self.step * self.scale))
            })
            .collect()
    }
}

/// A round number near `v` for an axis' top.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&m| m >= v)
        .unwrap_or(10.0 * p)
}

/// `v` with as many decimals as a step of `step` between neighbours needs (0.5 for 0.5, 0 for
/// 2): a round step's labels are round.
fn fmt_num(v: f64, step: f64) -> String {
    let decimals = if !(step > 0.0 && step.is_finite()) || step >= 1.0 {
        0
    } else {
        (-step.log10() - 1e-9).ceil().clamp(0.0, 9.0) as usize
    };
    format!("{v:.decimals$}")
}

/// Lines over time (x: Unix seconds). `from_zero`: the y axis starts at 0.
fn line_plot(
    id: &str,
    title: &str,
    series: &[(String, Vec<(f64, f64)>)],
    unit: Unit,
    from_zero: bool,
) -> String {
    let points: usize = series.iter().map(|(_, p)| p.len()).sum();
    if points == 0 {
        return empty(
            id,
            title,
            "no data yet (the first point comes within a minute)",
        );
    }
    let all = || series.iter().flat_map(|(_, p)| p.iter());
    let (x0, x1) = all().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (mut y0, y1) = all().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    if from_zero {
        y0 = y0.min(0.0);
    }
    let axis = Axis::new(y0, y1, unit);
    let (y0, y1) = (axis.lo, axis.hi);
    let xspan = (x1 - x0).max(1.0);
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let x = |t: f64| LEFT + (t - x0) / xspan * pw;
    let y = |v: f64| TOP + ph - (v - y0) / (y1 - y0) * ph;
    let mut svg = format!(
        r#"<svg viewBox="0 0 {W} {H}" role="img" aria-label="{}">"#,
        escape(title)
    );
    axes(&mut svg, &axis);
    let span = if x1 - x0 >= 120.0 {
        format!("-{:.0} min", (x1 - x0) / 60.0)
    } else {
        format!("-{:.0} s", x1 - x0)
    };
    let _ = write!(
        svg,
        r#"<text x="{LEFT}" y="{}">{span}</text><text x="{}" y="{}" text-anchor="end">now</text>"#,
        H - 8.0,
        W - RIGHT,
        H - 8.0
    );
    for (i, (_, pts)) in series.iter().enumerate() {
        if pts.is_empty() {
            continue;
        }
        let mut d = String::new();
        for (j, &(t, v)) in pts.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1}",
                if j == 0 { "M" } else { " L" },
                x(t),
                y(v)
            );
        }
        let colour = PALETTE[i % PALETTE.len()];
        let _ = write!(
            svg,
            r#"<path d="{d}" fill="none" stroke="{colour}" stroke-width="1.8"/>"#
        );
        if pts.len() == 1 {
            let (t, v) = pts[0];
            let _ = write!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#,
                x(t),
                y(v)
            );
        }
    }
    svg += "</svg>";
    let names: Vec<&str> = series.iter().map(|(n, _)| n.as_str()).collect();
    figure(id, title, points, &svg, &legend(&names))
}

/// Grid lines and labels; the top label carries the unit.
fn axes(svg: &mut String, axis: &Axis) {
    let ph = H - TOP - BOTTOM;
    let ticks = axis.ticks();
    let last = ticks.len() - 1;
    for (k, (v, label)) in ticks.into_iter().enumerate() {
        let yy = TOP + ph - ph * (v - axis.lo) / (axis.hi - axis.lo);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#e2e8f0"/><text x="{}" y="{:.1}" text-anchor="end">{label}{}</text>"##,
            W - RIGHT,
            LEFT - 4.0,
            yy + 4.0,
            if k == last { axis.suffix } else { "" }
        );
    }
}

/// Horizontal bars: one per label.
fn bar_plot(id: &str, title: &str, bars: &[(String, f64)]) -> String {
    if bars.is_empty() {
        return empty(id, title, "no views");
    }
    let max = nice_max(bars.iter().map(|b| b.1).fold(0.0, f64::max));
    let row = 22.0;
    let h = TOP + row * bars.len() as f64 + 8.0;
    let pw = W - 120.0 - RIGHT - 50.0;
    let mut svg = format!(
        r#"<svg viewBox="0 0 {W} {h}" role="img" aria-label="{}">"#,
        escape(title)
    );
    for (i, (name, v)) in bars.iter().enumerate() {
        let yy = TOP + row * i as f64;
        let _ = write!(
            svg,
            r#"<text x="114" y="{:.1}" text-anchor="end">{}</text><rect x="120" y="{yy:.1}" width="{:.1}" height="{}" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            yy + 14.0,
            escape(name),
            (v / max * pw).max(1.0),
            row - 6.0,
            PALETTE[i % PALETTE.len()],
            124.0 + (v / max * pw).max(1.0),
            yy + 14.0,
            fmt_num(*v, 1.0)
        );
    }
    svg += "</svg>";
    figure(id, title, bars.len(), &svg, "")
}

/// The host's CPU load by second of the minute: this hour as bars, earlier hours as lines, and
/// a marker where each view's minute starts (`starts`: names, second of the host's minute).
fn cpu_plot(cpu: &MinuteProfile, starts: &[(String, f64)]) -> String {
    let id = "cpu";
    let title = "Host CPU load by second of the minute (this hour: bars; earlier hours: lines)";
    let Some(now) = cpu.current() else {
        return empty(id, title, "no samples of /proc/stat yet");
    };
    let bins = now.bins();
    let points = bins.iter().flatten().count();
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let y = |v: f64| TOP + ph - v * ph;
    let mut svg = format!(r#"<svg viewBox="0 0 {W} {H}" role="img" aria-label="{title}">"#);
    axes(
        &mut svg,
        &Axis {
            lo: 0.0,
            hi: 100.0,
            step: 25.0,
            scale: 1.0,
            suffix: " %",
        },
    );
    let bw = pw / 60.0;
    for (i, b) in bins.iter().enumerate() {
        if let Some(v) = b {
            let _ = write!(
                svg,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"/>"#,
                LEFT + bw * i as f64 + 0.5,
                y(*v),
                bw - 1.0,
                (v * ph).max(0.5),
                PALETTE[0]
            );
        }
    }
    let earlier: Vec<_> = cpu.hours().rev().skip(1).take(3).collect();
    for (k, h) in earlier.iter().enumerate() {
        let _ = write!(
            svg,
            r#"<path d="{}" fill="none" stroke="{}" stroke-opacity="{:.2}" stroke-width="1.5"/>"#,
            hour_path(&h.bins(), bw, y),
            PALETTE[1 + k],
            0.9 - 0.2 * k as f64
        );
    }
    minute_marks(&mut svg, bw, ph, starts);
    svg += "</svg>";
    let peak = now
        .peak_to_mean()
        .map_or(String::new(), |p| format!("peak/mean this hour: {p:.2}"));
    let peak = if starts.is_empty() {
        peak
    } else {
        format!("{peak}; dashed: where each view's minute starts on this host's clock")
    };
    let mut names = vec!["this hour".to_string()];
    names.extend((1..=earlier.len()).map(|k| format!("{k} h ago")));
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    figure(
        id,
        title,
        points,
        &svg,
        &format!("{}<div class=\"legend\">{peak}</div>", legend(&names)),
    )
}

/// An earlier hour's load by second as a line (its seconds without samples skipped).
fn hour_path(bins: &[Option<f64>], bw: f64, y: impl Fn(f64) -> f64) -> String {
    let mut d = String::new();
    for (i, b) in bins.iter().enumerate() {
        if let Some(v) = b {
            let _ = write!(
                d,
                "{}{:.1},{:.1}",
                if d.is_empty() { "M" } else { " L" },
                LEFT + bw * (i as f64 + 0.5),
                y(*v)
            );
        }
    }
    d
}

/// The quarter-minute labels, and a dashed line where each view's minute starts.
fn minute_marks(svg: &mut String, bw: f64, ph: f64, starts: &[(String, f64)]) {
    for s in [0, 15, 30, 45] {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">:{s:02}</text>"#,
            LEFT + bw * s as f64,
            H - 8.0
        );
    }
    for (names, at) in starts {
        let xx = LEFT + bw * at;
        let _ = write!(
            svg,
            r##"<g class="view-start"><line x1="{xx:.1}" x2="{xx:.1}" y1="{TOP}" y2="{}" stroke="#1a202c" stroke-dasharray="3 3"/><text x="{:.1}" y="{}">{}</text></g>"##,
            TOP + ph,
            xx + 3.0,
            TOP + 10.0,
            escape(names)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::status::{ServeStatus, ViewStatus};

    #[test]
    fn every_plot_shows_what_the_history_holds() {
        let mut h = History::default();
        let mut cpu = MinuteProfile::default();
        for t in 0..120u64 {
            h.push("requests/a", 1000 + t, (t * 5) as f64);
            h.push("dropped/rate_limited", 1000 + t, t as f64);
            h.push("reference/error", 1000 + t, 0.001);
            cpu.add(1000 + t, 0.2);
        }
        let mut st = ServeStatus::default();
        st.views.push(ViewStatus {
            name: "a<b".into(),
            clients_last_hour: 3,
            ..ViewStatus::default()
        });
        st.views[0].name = "a".into();
        st.load = Some(LoadStatus {
            vms: 1,
            profiled: 1,
            peak_cores: 0.9,
            peak_second: 0,
            views: vec![],
            groups: vec![],
        });
        let vm = ClientEntry {
            address: "198.18.7.2".into(),
            view: Some("a".into()),
            vm: Some(crate::control::status::VmLoad {
                name: "web<1>".into(),
                pid: 42,
                source: "process".into(),
                minutes: 3,
                peak_second: 0,
                peak_cores: 0.8,
                share_of_host_peak: 0.89,
            }),
            ..ClientEntry::default()
        };
        let html = page("t", &Status::Serve(st), &h, &cpu, &[vm]);
        assert!(
            html.contains("web&lt;1&gt;") && html.contains("89 %"),
            "{html}"
        );
        for id in ["requests", "clients", "drops", "reference", "cpu", "vms"] {
            let at = html
                .find(&format!("id=\"plot-{id}\" data-points=\""))
                .expect(id);
            let n: usize = html[at..]
                .split('"')
                .nth(3)
                .and_then(|n| n.parse().ok())
                .expect(id);
            assert!(n > 0, "plot {id} is empty");
        }
        assert!(
            !html.contains("http"),
            "self-contained: nothing fetched from elsewhere"
        );
    }

    #[test]
    fn axes_label_round_steps_in_the_unit_that_fits() {
        // Tick jitter of a few microseconds, in seconds.
        let a = Axis::new(0.0, 2.7e-6, Unit::Seconds);
        let labels: Vec<String> = a.ticks().into_iter().map(|t| t.1).collect();
        assert_eq!(labels, ["0", "1", "2", "3"]);
        assert_eq!(a.suffix, " µs");
        // An offset around zero, in milliseconds.
        let a = Axis::new(-0.0027, 0.0025, Unit::Seconds);
        let labels: Vec<String> = a.ticks().into_iter().map(|t| t.1).collect();
        assert_eq!(labels, ["-4", "-2", "0", "2", "4"]);
        assert_eq!(a.suffix, " ms");
        // Rates: half steps get one decimal.
        let a = Axis::new(0.0, 1.7, Unit::Suffix("/s"));
        let labels: Vec<String> = a.ticks().into_iter().map(|t| t.1).collect();
        assert_eq!(labels, ["0.0", "0.5", "1.0", "1.5", "2.0"]);
        // One value: an axis around it, never a zero-height one.
        let a = Axis::new(5.0, 5.0, Unit::Suffix(""));
        assert!(a.lo < 5.0 && a.hi > 5.0);
        let a = Axis::new(0.0, 0.0, Unit::Seconds);
        assert!(a.hi > a.lo);
    }

    #[test]
    fn the_cpu_plot_marks_where_each_views_minute_starts() {
        let mut cpu = MinuteProfile::default();
        for t in 0..60u64 {
            cpu.add(1_800_000_000 + t, 0.2);
        }
        let mut st = ServeStatus::default();
        for (name, offset_s) in [
            ("q0", 0.0),
            ("q15", 15.0),
            ("q30", 30.0),
            ("q45", 45.0),
            ("again", 60.0),
        ] {
            st.views.push(ViewStatus {
                name: name.into(),
                offset_s,
                ..ViewStatus::default()
            });
        }
        let html = plots(&Status::Serve(st), &History::default(), &cpu, &[]);
        let marks: Vec<&str> = html.split("<g class=\"view-start\">").skip(1).collect();
        assert_eq!(marks.len(), 4, "{html}");
        // +15 s starts its minute at the host's :45, so it is drawn there.
        let x = |s: f64| format!("x1=\"{:.1}\"", LEFT + (W - LEFT - RIGHT) / 60.0 * s);
        assert!(marks[0].contains(&x(0.0)) && marks[0].contains(">q0, again<"));
        assert!(marks[1].contains(&x(45.0)) && marks[1].contains(">q15<"));
    }

    #[test]
    fn empty_history_says_so_rather_than_drawing_nothing() {
        let html = plots(
            &Status::Serve(ServeStatus::default()),
            &History::default(),
            &MinuteProfile::default(),
            &[],
        );
        assert!(html.contains("id=\"plot-cpu\" data-points=\"0\""));
        assert!(html.contains("no samples of /proc/stat yet"));
    }
}
