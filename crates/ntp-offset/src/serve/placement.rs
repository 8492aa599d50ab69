//! Load-aware placement at run time (`place = "load"`, the default): where a new client of a
//! balanced group goes, and every [`OPTIMIZE_EVERY`] the optimizer's moves, each a walk
//! (`move = "smear"`). The decisions are proto's ([`ntp_offset_proto::load`]); the VMs and
//! their profiles are the watcher's ([`crate::vms`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ntp_offset_proto::load::host::{HostLoad, Standing};
use ntp_offset_proto::load::placement::{add, busiest, peak, Curve, Params, Slot};
use ntp_offset_proto::move_smear::Moves;
use ntp_offset_proto::time::{Offset, Time};
use ntp_offset_proto::view::ViewId;
use tracing::info;

use super::assignments::balanced_groups;
use super::Runtime;
use crate::control::status::{GroupLoad, LoadStatus, ViewLoad, VmLoad};
use crate::vms::Vms;

/// At most this many VMs start walking per look: 30 an hour.
const MOVES_PER_RUN: usize = 5;

/// The offset `client` is served at `now`, if a balanced group knows it.
pub fn served_offset(runtime: &Runtime, client: IpAddr, now: Time) -> Option<Offset> {
    runtime.groups.iter().find_map(|g| {
        g.balancer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .served_offset_at(client, now)
    })
}

/// One look for moves in every balanced group placed by load whose moves walk, and whose
/// `optimize_every` has passed since its last look (`last`, by group name).
pub fn optimize(runtime: &Runtime, vms: &Vms, now: Time, last: &mut HashMap<String, Instant>) {
    for (_, b) in balanced_groups(&runtime.views) {
        let (true, Moves::Smear(pace)) = (b.by_load, b.moves) else {
            continue;
        };
        let looked = last.entry(b.name.clone()).or_insert_with(Instant::now);
        if looked.elapsed() < Duration::from_secs(b.optimize_every_s) {
            continue;
        }
        *looked = Instant::now();
        let Some(g) = runtime.groups.iter().find(|g| g.name == b.name) else {
            continue;
        };
        let (members, slots) = {
            let bal = g.balancer.read().unwrap_or_else(|p| p.into_inner());
            (bal.members().to_vec(), bal.slots())
        };
        let member_view = |ip: IpAddr| -> Option<ViewId> {
            let bal = g.balancer.read().unwrap_or_else(|p| p.into_inner());
            bal.get(ip)
                .map(|a| a.view)
                .filter(|v| members.iter().any(|m| m.view == *v))
        };
        let (host, addrs) =
            vms.host_load(now, &|ip, t| served_offset(runtime, ip, t), &member_view);
        let mut ours: Vec<(IpAddr, Standing)> = {
            let bal = g.balancer.read().unwrap_or_else(|p| p.into_inner());
            // Placed in a member view by `member_view` above (no second lock on the balancer).
            host.iter()
                .filter(|(_, p)| members.iter().any(|m| m.view == p.view))
                .map(|(ip, _)| {
                    let standing = match bal.served(*ip) {
                        Some((_, Some(walk))) => Standing::Walking(walk),
                        _ => Standing::Free,
                    };
                    (*ip, standing)
                })
                .collect()
        };
        ours.sort_by_key(|m| m.0);
        let params = Params {
            max_moves: MOVES_PER_RUN,
            pace: Some(pace),
            ..Params::default()
        };
        let plan = host.optimize(&ours, &slots, &params, now);
        if plan.moves.is_empty() {
            continue;
        }
        let mut bal = g.balancer.write().unwrap_or_else(|p| p.into_inner());
        // The second the moves are made in, not the look's (which may have taken a while):
        // a walk starts at the next one.
        let now_s = super::unix_seconds();
        let view_name = |v: ViewId| runtime.views.view(v).name.clone();
        for m in &plan.moves {
            // Every address of the VM walks alike.
            for ip in addrs.get(&m.key).map_or(&[][..], Vec::as_slice) {
                bal.move_to(*ip, m.to, now_s);
            }
            info!(group = %b.name, client = %m.key, from = %view_name(m.from), to = %view_name(m.to), "moving a VM to lower the host's busiest second (its time walks there)");
        }
        info!(group = %b.name, moves = plan.moves.len(), peak_before = format!("{:.2}", plan.peak_before), peak_after = format!("{:.2}", plan.peak_after), "load-aware moves started (predicted host CPU in its busiest second, cores)");
        g.changed.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A VM's addresses share one view. One placed before the host could tell its VM (by
/// count, while its VM's other address had another view) walks to the view of the VM's
/// address seen first. Called every few seconds, after the watcher's discovery.
pub fn reconcile(runtime: &Runtime, vms: &Vms) {
    let rows = vms.rows();
    for (_, b) in balanced_groups(&runtime.views).filter(|(_, b)| b.by_load) {
        let Some(g) = runtime.groups.iter().find(|g| g.name == b.name) else {
            continue;
        };
        for row in rows.iter().filter(|r| r.addrs.len() > 1) {
            let (view, strays) = {
                let bal = g.balancer.read().unwrap_or_else(|p| p.into_inner());
                let placed: Vec<(IpAddr, ViewId, u64)> = row
                    .addrs
                    .iter()
                    .filter_map(|a| bal.get(*a).map(|x| (*a, x.view, x.first_seen)))
                    .collect();
                let Some(&(_, view, _)) = placed.iter().min_by_key(|p| (p.2, p.0)) else {
                    continue;
                };
                let strays: Vec<IpAddr> =
                    placed.iter().filter(|p| p.1 != view).map(|p| p.0).collect();
                (view, strays)
            };
            if strays.is_empty() {
                continue;
            }
            let mut bal = g.balancer.write().unwrap_or_else(|p| p.into_inner());
            let now_s = super::unix_seconds();
            let mut moved = false;
            for a in &strays {
                if bal.move_to(*a, view, now_s) {
                    moved = true;
                    info!(group = %b.name, vm = %row.name, client = %a, to = %runtime.views.view(view).name, "a VM's address joins the view of its other addresses");
                }
            }
            // A stray that cannot move yet (still walking) is tried again in 5 s; the table
            // is saved only when one did.
            if moved {
                g.changed.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

/// What `status` and `/metrics` say of the host's load (None while nothing is watched).
pub fn load_status(runtime: &Runtime, vms: &Vms, now: Time) -> Option<LoadStatus> {
    let rows = vms.rows();
    if rows.is_empty() && !vms.watching() {
        return None;
    }
    let view_of = |ip: IpAddr| {
        runtime.groups.iter().find_map(|g| {
            let b = g.balancer.read().unwrap_or_else(|p| p.into_inner());
            b.get(ip).map(|a| a.view)
        })
    };
    let (host, _) = vms.host_load(now, &|ip, t| served_offset(runtime, ip, t), &view_of);
    let curve = host.curve();
    let (peak_second, peak_cores) = busiest(curve);
    let peak_second = peak_second as u8;
    let mut views: Vec<ViewLoad> = Vec::new();
    for (id, v) in runtime.views.views().iter().enumerate() {
        let c = curve_in(&host, &[ViewId(id as u16)]);
        if host.iter().any(|(_, p)| p.view == ViewId(id as u16)) {
            views.push(ViewLoad {
                view: v.name.clone(),
                peak_cores: peak(&c),
            });
        }
    }
    let groups = balanced_groups(&runtime.views)
        .filter(|(_, b)| b.by_load)
        .map(|(spread, b)| {
            let members: Vec<ViewId> = spread.members().collect();
            let c = curve_in(&host, &members);
            GroupLoad {
                group: b.name.clone(),
                peak_cores: peak(&c),
            }
        })
        .collect();
    Some(LoadStatus {
        vms: rows.len() as u64,
        profiled: rows.iter().filter(|r| r.minutes >= 2).count() as u64,
        peak_cores,
        peak_second,
        views,
        groups,
    })
}

/// The host's predicted curve now, from every known profile at its served offset: what the
/// optimizer sees. Not the watcher's copy, which is up to a second (or, on a busy host, more)
/// old: `clients` read right after a move once put a VM's share against a curve made before
/// the busy VMs' profiles counted.
pub fn host_curve(runtime: &Runtime, vms: &Vms, now: Time) -> Curve {
    let (host, _) = vms.host_load(now, &|ip, t| served_offset(runtime, ip, t), &|_| None);
    *host.curve()
}

/// The predicted curve of the VMs placed in `views` alone.
fn curve_in(host: &HostLoad<IpAddr>, views: &[ViewId]) -> Curve {
    let mut c = [0.0; 60];
    for (_, p) in host.iter().filter(|(_, p)| views.contains(&p.view)) {
        add(&mut c, &p.profile, p.shift, 1.0);
    }
    c
}

/// While `client` walks (`move = "smear"`, whatever its group's `place`): the view it walks to
/// and how far it has left to go (seconds).
pub fn walk_left(runtime: &Runtime, client: IpAddr, now: Time) -> Option<(String, f64)> {
    runtime.groups.iter().find_map(|g| {
        let b = g.balancer.read().unwrap_or_else(|p| p.into_inner());
        let (view, walk) = b.served(client)?;
        let w = walk?;
        let left = (w.to.nanos() - w.offset_at(now).nanos()) as f64 / 1e9;
        Some((runtime.views.view(view).name.clone(), left))
    })
}

/// The VM behind `client` and its load.
pub fn client_load(
    runtime: &Runtime,
    rows: &[crate::vms::VmRow],
    host_curve: &Curve,
    client: IpAddr,
    now: Time,
) -> Option<VmLoad> {
    let row = rows.iter().find(|r| r.addrs.contains(&client))?;
    let (peak_second, peak_cores) = row.profile.peak();
    let (host_second, host_peak) = busiest(host_curve);
    let shift = Slot::new(
        ViewId(0),
        served_offset(runtime, client, now).map_or(0, |o| o.nanos()),
    )
    .shift;
    let at_peak = row.profile.bins[(host_second + shift) % 60];
    let share = if host_peak > 0.0 && row.minutes >= 2 {
        (f64::from(at_peak) / host_peak) as f32
    } else {
        0.0
    };
    let vm = VmLoad {
        name: row.name.clone(),
        pid: row.pid,
        source: row.source.clone(),
        minutes: row.minutes,
        peak_second: peak_second as u8,
        peak_cores: peak_cores.max(0.0),
        share_of_host_peak: share,
    };
    Some(vm)
}
