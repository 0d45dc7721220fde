import { NodeHealth } from "@fabric/proto/fabric/registry/v1/session_pb.js";
import type { NodeClass } from "./node-class.js";

/**
 * Peer scoring. Every factor maps one input to 0.0-1.0 (higher is better); the total is their
 * weighted sum. Inputs are quantized (load to tenths, latency to 5 ms, loss to hundredths) so that
 * jitter in heartbeats and probes does not reshuffle peers and push new snapshot versions.
 */
export const WEIGHTS = {
  latency: 0.25,
  loss: 0.15,
  load: 0.15,
  roleSuitability: 0.15,
  region: 0.1,
  trust: 0.05,
  recentFailures: 0.1,
  diversity: 0.05,
} as const;

/** A factor the router has no figure for scores here: neither rewarded nor punished. */
const UNKNOWN = 0.5;
const DAY_MS = 86_400_000;
/** Membership age at which trust from age is full. */
const TRUST_RAMP_DAYS = 7;

export interface Factors {
  latency: number;
  loss: number;
  load: number;
  region: number;
  roleSuitability: number;
  trust: number;
  recentFailures: number;
  diversity: number;
}

export function total(f: Factors): number {
  return weightedSum(
    f.latency,
    f.loss,
    f.load,
    f.region,
    f.roleSuitability,
    f.trust,
    f.recentFailures,
    f.diversity,
  );
}

/**
 * The weighted sum, from the factors as plain numbers (the hot path ranks without building factor
 * objects). One function for both, so a total is bit-for-bit the same however it is computed.
 */
export function weightedSum(
  latency: number,
  loss: number,
  load: number,
  region: number,
  roleSuitability: number,
  trust: number,
  recentFailures: number,
  diversity: number,
): number {
  return (
    WEIGHTS.latency * latency +
    WEIGHTS.loss * loss +
    WEIGHTS.load * load +
    WEIGHTS.region * region +
    WEIGHTS.roleSuitability * roleSuitability +
    WEIGHTS.trust * trust +
    WEIGHTS.recentFailures * recentFailures +
    WEIGHTS.diversity * diversity
  );
}

/** 1.0 at 0 ms, 0.5 at 50 ms, 0.25 at 150 ms. */
export function latencyScore(ms: number | undefined): number {
  if (ms === undefined) return UNKNOWN;
  return 1 / (1 + (Math.round(ms / 5) * 5) / 50);
}

/** 1.0 without loss, 0.0 from 20 % loss. */
export function lossScore(ratio: number | undefined): number {
  if (ratio === undefined) return UNKNOWN;
  return clamp01(1 - (Math.round(ratio * 100) / 100) * 5);
}

export function loadScore(load: number | undefined): number {
  if (load === undefined) return UNKNOWN;
  return clamp01(1 - Math.round(clamp01(load) * 10) / 10);
}

/** Same region 1.0; same area (the part before the first `-`, e.g. `eu`) 0.6; elsewhere 0.2. */
export function regionScore(from: string, to: string): number {
  if (!from || !to) return UNKNOWN;
  if (from === to) return 1;
  return areaOf(from) === areaOf(to) ? 0.6 : 0.2;
}

// Regions are few and scored millions of times: their areas are cut once.
const areas = new Map<string, string>();

function areaOf(region: string): string {
  let area = areas.get(region);
  if (area === undefined) {
    const dash = region.indexOf("-");
    area = dash < 0 ? region : region.slice(0, dash);
    areas.set(region, area);
  }
  return area;
}

/** What a candidate is, as far as suitability goes. */
export type CandidateKind = "relay" | "entry" | "other";

/**
 * How well a candidate suits the selecting node: relays carry mesh traffic for everyone, so every
 * class prefers them; relays among themselves form the core; thin nodes lean on relays most.
 */
export function roleSuitability(selector: NodeClass, candidate: CandidateKind): number {
  if (candidate === "relay") return 1;
  if (selector === "relay") return candidate === "entry" ? 0.5 : 0.4;
  if (selector === "thin") return candidate === "entry" ? 0.4 : 0.3;
  return candidate === "entry" ? 0.7 : 0.6;
}

const HEALTH_SCORE: Record<NodeHealth, number> = {
  [NodeHealth.UNSPECIFIED]: UNKNOWN,
  [NodeHealth.HEALTHY]: 1,
  [NodeHealth.DEGRADED]: 0.5,
  [NodeHealth.UNHEALTHY]: 0.1,
};

/**
 * Trust: reported health and membership age in whole days (a node that joined today is trusted
 * less than one that has been a member for a week). Days, not milliseconds, so replicas computing at
 * slightly different moments agree.
 */
export function trustScore(health: NodeHealth, joinedAtMs: number | undefined, nowMs: number): number {
  const days = joinedAtMs === undefined ? 0 : Math.max(0, Math.floor((nowMs - joinedAtMs) / DAY_MS));
  const age = Math.min(1, days / TRUST_RAMP_DAYS);
  return 0.5 * (HEALTH_SCORE[health] ?? UNKNOWN) + 0.5 * (0.5 + 0.5 * age);
}

/** None 1.0, one 0.5, three 0.25. */
export function failuresScore(failures: number | undefined): number {
  return failures === undefined ? 1 : 1 / (1 + failures);
}

/** A deterministic value in [0, 1) for the ordered pair, from both ids' hashes. */
export function diversityScore(selectorHash: number, candidateHash: number): number {
  let h = Math.imul(selectorHash ^ Math.imul(candidateHash, 0x9e3779b1), 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return (h >>> 0) / 4_294_967_296;
}

function clamp01(v: number): number {
  return v < 0 ? 0 : v > 1 ? 1 : v;
}
