// Values from <linux/if_tun.h>; they are kernel ABI and never change.

export const IFF_TUN = 0x0001;
export const IFF_TAP = 0x0002;
export const IFF_NAPI = 0x0010;
export const IFF_NAPI_FRAGS = 0x0020;
export const IFF_NO_CARRIER = 0x0040;
export const IFF_NO_PI = 0x1000;
export const IFF_ONE_QUEUE = 0x2000;
export const IFF_VNET_HDR = 0x4000;
export const IFF_TUN_EXCL = 0x8000;
export const IFF_MULTI_QUEUE = 0x0100;

export const TUN_F_CSUM = 0x01;
export const TUN_F_TSO4 = 0x02;
export const TUN_F_TSO6 = 0x04;
export const TUN_F_TSO_ECN = 0x08;
export const TUN_F_UFO = 0x10;
export const TUN_F_USO4 = 0x20;
export const TUN_F_USO6 = 0x40;

/** The kernel's limit on queues of one tun/tap device (MAX_TAP_QUEUES). */
export const MAX_TAP_QUEUES = 256;
/** IFNAMSIZ less the terminating NUL. */
export const MAX_IFNAME_BYTES = 15;
