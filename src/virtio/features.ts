// Feature bits, virtio 1.x sections 5.1.3 (network device) and 6 (reserved bits).
// Bits above 31 need BigInt; everything here uses bigint masks.

export const VIRTIO_NET_F_CSUM = 0;
export const VIRTIO_NET_F_GUEST_CSUM = 1;
export const VIRTIO_NET_F_CTRL_GUEST_OFFLOADS = 2;
export const VIRTIO_NET_F_MTU = 3;
export const VIRTIO_NET_F_MAC = 5;
export const VIRTIO_NET_F_GUEST_TSO4 = 7;
export const VIRTIO_NET_F_GUEST_TSO6 = 8;
export const VIRTIO_NET_F_GUEST_ECN = 9;
export const VIRTIO_NET_F_GUEST_UFO = 10;
export const VIRTIO_NET_F_HOST_TSO4 = 11;
export const VIRTIO_NET_F_HOST_TSO6 = 12;
export const VIRTIO_NET_F_HOST_ECN = 13;
export const VIRTIO_NET_F_HOST_UFO = 14;
export const VIRTIO_NET_F_MRG_RXBUF = 15;
export const VIRTIO_NET_F_STATUS = 16;
export const VIRTIO_NET_F_CTRL_VQ = 17;
export const VIRTIO_NET_F_CTRL_RX = 18;
export const VIRTIO_NET_F_CTRL_VLAN = 19;
export const VIRTIO_NET_F_GUEST_ANNOUNCE = 21;
export const VIRTIO_NET_F_MQ = 22;
export const VIRTIO_NET_F_CTRL_MAC_ADDR = 23;
export const VIRTIO_RING_F_INDIRECT_DESC = 28;
export const VIRTIO_RING_F_EVENT_IDX = 29;
export const VIRTIO_F_VERSION_1 = 32;
/** 6: the packed virtqueue layout (2.8) instead of the split one (2.7), on every queue of the device. */
export const VIRTIO_F_RING_PACKED = 34;
export const VIRTIO_NET_F_GUEST_USO4 = 54;
export const VIRTIO_NET_F_GUEST_USO6 = 55;
export const VIRTIO_NET_F_HOST_USO = 56;
/** The device reports each received frame's RSS hash in the header. Not offered: see README ("Receive-side scaling"). */
export const VIRTIO_NET_F_HASH_REPORT = 57;
/** Receive-side scaling: the guest's Toeplitz key, hash types and indirection table steer received frames (5.1.6.5.7). */
export const VIRTIO_NET_F_RSS = 60;

/** The mask of one feature bit. */
export function featureBit(bit: number): bigint {
  return 1n << BigInt(bit);
}

export function hasFeature(features: bigint, bit: number): boolean {
  return (features & featureBit(bit)) !== 0n;
}

/** virtio_net_hdr size for negotiated features (virtio 1.x 5.1.6): 12 with VERSION_1 or MRG_RXBUF, else 10. */
export function netHdrSize(features: bigint): 10 | 12 {
  return hasFeature(features, VIRTIO_F_VERSION_1) || hasFeature(features, VIRTIO_NET_F_MRG_RXBUF) ? 12 : 10;
}

const FEATURE_NAMES: Record<number, string> = {
  [VIRTIO_NET_F_CSUM]: 'CSUM', [VIRTIO_NET_F_GUEST_CSUM]: 'GUEST_CSUM', [VIRTIO_NET_F_CTRL_GUEST_OFFLOADS]: 'CTRL_GUEST_OFFLOADS',
  [VIRTIO_NET_F_MTU]: 'MTU', [VIRTIO_NET_F_MAC]: 'MAC', [VIRTIO_NET_F_GUEST_TSO4]: 'GUEST_TSO4', [VIRTIO_NET_F_GUEST_TSO6]: 'GUEST_TSO6',
  [VIRTIO_NET_F_GUEST_ECN]: 'GUEST_ECN', [VIRTIO_NET_F_GUEST_UFO]: 'GUEST_UFO', [VIRTIO_NET_F_HOST_TSO4]: 'HOST_TSO4',
  [VIRTIO_NET_F_HOST_TSO6]: 'HOST_TSO6', [VIRTIO_NET_F_HOST_ECN]: 'HOST_ECN', [VIRTIO_NET_F_HOST_UFO]: 'HOST_UFO',
  [VIRTIO_NET_F_MRG_RXBUF]: 'MRG_RXBUF', [VIRTIO_NET_F_STATUS]: 'STATUS', [VIRTIO_NET_F_CTRL_VQ]: 'CTRL_VQ',
  [VIRTIO_NET_F_CTRL_RX]: 'CTRL_RX', [VIRTIO_NET_F_CTRL_VLAN]: 'CTRL_VLAN', [VIRTIO_NET_F_GUEST_ANNOUNCE]: 'GUEST_ANNOUNCE',
  [VIRTIO_NET_F_MQ]: 'MQ', [VIRTIO_NET_F_CTRL_MAC_ADDR]: 'CTRL_MAC_ADDR', [VIRTIO_RING_F_INDIRECT_DESC]: 'INDIRECT_DESC',
  [VIRTIO_RING_F_EVENT_IDX]: 'EVENT_IDX', [VIRTIO_F_VERSION_1]: 'VERSION_1', [VIRTIO_F_RING_PACKED]: 'RING_PACKED', [VIRTIO_NET_F_GUEST_USO4]: 'GUEST_USO4',
  [VIRTIO_NET_F_GUEST_USO6]: 'GUEST_USO6', [VIRTIO_NET_F_HOST_USO]: 'HOST_USO', [VIRTIO_NET_F_HASH_REPORT]: 'HASH_REPORT',
  [VIRTIO_NET_F_RSS]: 'RSS',
};

/** "GUEST_TSO4 (bit 7)", or "bit 40" for a bit this code has no name for. */
export function featureName(bit: number): string {
  const name = FEATURE_NAMES[bit];
  return name === undefined ? `bit ${bit}` : `${name} (bit ${bit})`;
}

/** A feature that means something only together with one of `oneOf` (virtio 1.x 5.1.3.1 "Requires"). */
export interface FeatureRequirement {
  feature: number;
  oneOf: readonly number[];
}

/** Virtio 1.x 5.1.3.1, "Feature bit requirements", for the bits this code knows. */
export const FEATURE_REQUIREMENTS: readonly FeatureRequirement[] = [
  { feature: VIRTIO_NET_F_GUEST_TSO4, oneOf: [VIRTIO_NET_F_GUEST_CSUM] },
  { feature: VIRTIO_NET_F_GUEST_TSO6, oneOf: [VIRTIO_NET_F_GUEST_CSUM] },
  { feature: VIRTIO_NET_F_GUEST_ECN, oneOf: [VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6] },
  { feature: VIRTIO_NET_F_GUEST_UFO, oneOf: [VIRTIO_NET_F_GUEST_CSUM] },
  { feature: VIRTIO_NET_F_GUEST_USO4, oneOf: [VIRTIO_NET_F_GUEST_CSUM] },
  { feature: VIRTIO_NET_F_GUEST_USO6, oneOf: [VIRTIO_NET_F_GUEST_CSUM] },
  { feature: VIRTIO_NET_F_HOST_TSO4, oneOf: [VIRTIO_NET_F_CSUM] },
  { feature: VIRTIO_NET_F_HOST_TSO6, oneOf: [VIRTIO_NET_F_CSUM] },
  { feature: VIRTIO_NET_F_HOST_ECN, oneOf: [VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6] },
  { feature: VIRTIO_NET_F_HOST_UFO, oneOf: [VIRTIO_NET_F_CSUM] },
  { feature: VIRTIO_NET_F_HOST_USO, oneOf: [VIRTIO_NET_F_CSUM] },
  { feature: VIRTIO_NET_F_CTRL_RX, oneOf: [VIRTIO_NET_F_CTRL_VQ] },
  { feature: VIRTIO_NET_F_CTRL_VLAN, oneOf: [VIRTIO_NET_F_CTRL_VQ] },
  { feature: VIRTIO_NET_F_GUEST_ANNOUNCE, oneOf: [VIRTIO_NET_F_CTRL_VQ] },
  { feature: VIRTIO_NET_F_MQ, oneOf: [VIRTIO_NET_F_CTRL_VQ] },
  { feature: VIRTIO_NET_F_CTRL_MAC_ADDR, oneOf: [VIRTIO_NET_F_CTRL_VQ] },
  // Listed in 5.1.3.1 since virtio 1.2: RSS_CONFIG travels on the control queue.
  { feature: VIRTIO_NET_F_RSS, oneOf: [VIRTIO_NET_F_CTRL_VQ] },
  // Not in 5.1.3.1's list, but its commands travel on the control queue (5.1.6.5.6.1).
  { feature: VIRTIO_NET_F_CTRL_GUEST_OFFLOADS, oneOf: [VIRTIO_NET_F_CTRL_VQ] },
];

/** "GUEST_ECN (bit 9) needs GUEST_TSO4 (bit 7) or GUEST_TSO6 (bit 8)". */
export function describeRequirement(requirement: FeatureRequirement): string {
  return `${featureName(requirement.feature)} needs ${requirement.oneOf.map(featureName).join(' or ')}`;
}

/**
 * Splits `features` into the ones that can be used together and the
 * requirements that leave the others out. `provided` counts as negotiated
 * without being in `features` (a vhost-user frontend's own control queue).
 * Repeated until nothing changes: HOST_ECN goes when HOST_TSO4 and HOST_TSO6
 * went for want of CSUM. `unmet` lists the direct breaks first.
 */
export function resolveRequirements(features: bigint, provided = 0n): { usable: bigint; unmet: FeatureRequirement[] } {
  let usable = features;
  const unmet: FeatureRequirement[] = [];
  // Each pass removes at least one feature or ends: bounded by the table's length.
  for (let pass = 0; pass <= FEATURE_REQUIREMENTS.length; pass++) {
    const have = usable | provided;
    const broken = FEATURE_REQUIREMENTS.filter((r) => hasFeature(usable, r.feature) && !r.oneOf.some((bit) => hasFeature(have, bit)));
    if (broken.length === 0) break;
    for (const r of broken) usable &= ~featureBit(r.feature);
    unmet.push(...broken);
  }
  return { usable, unmet };
}
