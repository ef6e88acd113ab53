import type { TapOffloads } from '../tap/tap';
import {
  VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
  VIRTIO_NET_F_GUEST_UFO, VIRTIO_NET_F_GUEST_USO4, VIRTIO_NET_F_GUEST_USO6, hasFeature,
} from './features';

/**
 * The tap offloads (TUNSETOFFLOAD) that match the guest offloads the driver
 * accepted, so the kernel never hands the guest a frame it cannot take: partial
 * checksums only with GUEST_CSUM, TSO only with GUEST_TSO4/6 (and CSUM), USO
 * only if the guest takes both USO4 and USO6 (the tap cannot do one alone).
 */
export function tapOffloadsForGuest(features: bigint): TapOffloads {
  const csum = hasFeature(features, VIRTIO_NET_F_GUEST_CSUM);
  const tso4 = csum && hasFeature(features, VIRTIO_NET_F_GUEST_TSO4);
  const tso6 = csum && hasFeature(features, VIRTIO_NET_F_GUEST_TSO6);
  const uso = csum && hasFeature(features, VIRTIO_NET_F_GUEST_USO4) && hasFeature(features, VIRTIO_NET_F_GUEST_USO6);
  return {
    csum,
    tso4,
    tso6,
    ecn: (tso4 || tso6) && hasFeature(features, VIRTIO_NET_F_GUEST_ECN),
    ufo: csum && hasFeature(features, VIRTIO_NET_F_GUEST_UFO),
    uso4: uso,
    uso6: uso,
  };
}
