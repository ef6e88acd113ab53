// The tap's steering program (TUNSETSTEERINGEBPF): for every frame the host
// sends to the guest, tun runs it to pick the queue, and takes the return value
// modulo the queues attached (drivers/net/tun.c, tun_ebpf_select_queue).
//
// It computes the Toeplitz hash of virtio-net RSS (virtio 1.2 5.1.6.5.7: the
// same function as Microsoft's RSS) over the fields the configured hash types
// select, and returns indirection_table[hash & mask]; a frame with no hash goes
// to the unclassified queue. The control plane writes the configuration into the
// one-entry array map: the guest's RSS settings, or, without RSS, a table that
// spreads flows over the queue pairs in use. Changing that table is how a queue
// leaves the steering before it is detached, so none of its frames is purged.
//
// Built with scripts/build-bpf.py (clang -target bpf) into steering_program.h,
// which is committed: npm install needs no clang. Plain C, no libbpf headers.
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>

#define SEC(name) __attribute__((section(name), used))
#define ALWAYS_INLINE static inline __attribute__((always_inline))

// Helper function ids from linux/bpf.h.
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
static long (*bpf_skb_load_bytes_relative)(const void *skb, __u32 offset, void *to, __u32 len, __u32 start) =
    (void *)BPF_FUNC_skb_load_bytes_relative;

// virtio 1.2 5.1.6.5.7.1 hash types (the ones offered: no _EX variants).
#define HASH_IPV4 (1u << 0)
#define HASH_TCPV4 (1u << 1)
#define HASH_UDPV4 (1u << 2)
#define HASH_IPV6 (1u << 3)
#define HASH_TCPV6 (1u << 4)
#define HASH_UDPV6 (1u << 5)

#define KEY_BYTES 40
#define TABLE_ENTRIES 128
#define MODE_STEER 0    // return the queue from the table
#define MODE_HASH 1     // return the hash itself (BPF_PROG_TEST_RUN checks it against published vectors)

// Must match SteeringConfig in native/steering.h.
struct steering_config {
  __u32 mode;
  __u32 hash_types;
  __u16 table_mask;    // entries - 1, a power of two minus one, < TABLE_ENTRIES
  __u16 unclassified;  // queue for frames with no hash
  __u8 key[KEY_BYTES];
  __u16 table[TABLE_ENTRIES];
};

// The loader creates this map (an array of one steering_config) and patches its fd in.
struct steering_config_map_placeholder {
  int unused;
} steering_config_map SEC(".maps");

ALWAYS_INLINE __u32 toeplitz(const __u8 *key, const __u8 *data, __u32 len) {
  __u32 hash = 0;
  __u32 window = ((__u32)key[0] << 24) | ((__u32)key[1] << 16) | ((__u32)key[2] << 8) | key[3];
  // 36 bytes at most (two IPv6 addresses and two ports): the key has 4 more.
  for (__u32 i = 0; i < 36; i++) {
    if (i >= len) break;
    __u8 byte = data[i];
    __u8 next = key[i + 4];
    for (int bit = 7; bit >= 0; bit--) {
      if (byte & (1u << bit)) hash ^= window;
      window = (window << 1) | ((next >> bit) & 1);
    }
  }
  return hash;
}

struct tuple {
  __u8 bytes[36];
};

SEC("socket")
int steer(struct __sk_buff *skb) {
  __u32 zero = 0;
  struct steering_config *c = bpf_map_lookup_elem(&steering_config_map, &zero);
  if (!c) return 0;

  struct tuple t = {};
  __u32 len = 0;
  int found = 0;
  __u16 proto;
  __u32 l3 = ETH_HLEN;
  if (bpf_skb_load_bytes_relative(skb, 12, &proto, 2, BPF_HDR_START_MAC)) goto unclassified;
  if (proto == __constant_htons(ETH_P_8021Q)) {  // one VLAN tag
    if (bpf_skb_load_bytes_relative(skb, 16, &proto, 2, BPF_HDR_START_MAC)) goto unclassified;
    l3 += 4;
  }

  if (proto == __constant_htons(ETH_P_IP)) {
    __u8 ip[20];
    if (bpf_skb_load_bytes_relative(skb, l3, ip, 20, BPF_HDR_START_MAC)) goto unclassified;
    if ((ip[0] >> 4) != 4) goto unclassified;
    __u32 ihl = (ip[0] & 0xf) * 4;
    __u8 protocol = ip[9];
    // A fragment other than the first, or one with more to come, has no whole L4 header to trust.
    int fragment = ((ip[6] & 0x3f) | ip[7]) != 0;
    __builtin_memcpy(t.bytes, ip + 12, 8);  // source, then destination address
    len = 8;
    if (!fragment && ihl >= 20 &&
        (((c->hash_types & HASH_TCPV4) && protocol == IPPROTO_TCP) || ((c->hash_types & HASH_UDPV4) && protocol == IPPROTO_UDP))) {
      if (bpf_skb_load_bytes_relative(skb, l3 + ihl, t.bytes + 8, 4, BPF_HDR_START_MAC) == 0) {
        len = 12;
        found = 1;
      }
    }
    if (!found && (c->hash_types & HASH_IPV4)) {
      len = 8;
      found = 1;
    }
  } else if (proto == __constant_htons(ETH_P_IPV6)) {
    __u8 ip[40];
    if (bpf_skb_load_bytes_relative(skb, l3, ip, 40, BPF_HDR_START_MAC)) goto unclassified;
    if ((ip[0] >> 4) != 6) goto unclassified;
    __u8 next = ip[6];
    __u32 off = l3 + 40;
    int fragment = 0;
    // Extension headers before the transport header: hop-by-hop, routing, destination options, fragment.
    for (int i = 0; i < 4; i++) {
      if (next != 0 && next != 43 && next != 60 && next != 44) break;
      __u8 ext[8];
      if (bpf_skb_load_bytes_relative(skb, off, ext, 8, BPF_HDR_START_MAC)) goto unclassified;
      if (next == 44) {
        if (((ext[2] << 8 | ext[3]) & 0xfff9) != 0) fragment = 1;  // an offset, or more fragments to come
        off += 8;
      } else {
        off += ((__u32)ext[1] + 1) * 8;
      }
      next = ext[0];
    }
    __builtin_memcpy(t.bytes, ip + 8, 32);  // source, then destination address
    len = 32;
    if (!fragment &&
        (((c->hash_types & HASH_TCPV6) && next == IPPROTO_TCP) || ((c->hash_types & HASH_UDPV6) && next == IPPROTO_UDP))) {
      if (bpf_skb_load_bytes_relative(skb, off, t.bytes + 32, 4, BPF_HDR_START_MAC) == 0) {
        len = 36;
        found = 1;
      }
    }
    if (!found && (c->hash_types & HASH_IPV6)) {
      len = 32;
      found = 1;
    }
  }
  if (!found) goto unclassified;

  __u32 hash = toeplitz(c->key, t.bytes, len);
  if (c->mode == MODE_HASH) return hash;
  return c->table[hash & c->table_mask & (TABLE_ENTRIES - 1)];

unclassified:
  if (c->mode == MODE_HASH) return 0;
  return c->unclassified;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
