// The VMM's side of a virtio-mmio transport (virtio 1.x 4.2.2, version 2
// registers) in front of a VirtioNetDevice: how a VMM written in TypeScript
// turns the guest's register reads and writes into device calls. Kicks and
// interrupts are eventfds, as KVM's ioeventfd and irqfd would carry them.
import type { VirtioNetDevice } from '../../src';

const MAGIC = 0x74726976; // "virt"
const DEVICE_ID_NET = 1;
const VENDOR_ID = 0x554d4551;

export const REG = {
  MagicValue: 0x000, Version: 0x004, DeviceID: 0x008, VendorID: 0x00c,
  DeviceFeatures: 0x010, DeviceFeaturesSel: 0x014, DriverFeatures: 0x020, DriverFeaturesSel: 0x024,
  QueueSel: 0x030, QueueNumMax: 0x034, QueueNum: 0x038, QueueReady: 0x044, QueueNotify: 0x050,
  InterruptStatus: 0x060, InterruptACK: 0x064, Status: 0x070,
  QueueDescLow: 0x080, QueueDescHigh: 0x084, QueueDriverLow: 0x090, QueueDriverHigh: 0x094,
  QueueDeviceLow: 0x0a0, QueueDeviceHigh: 0x0a4, ConfigGeneration: 0x0fc, Config: 0x100,
} as const;

interface QueueRegisters {
  num: number;
  ready: boolean;
  desc: number;
  driver: number;
  device: number;
}

/** What the VMM wires per virtqueue: the guest's notify doorbell and its interrupt line, as eventfds. */
export interface QueueSignals {
  kickFd: number;
  callFd: number;
}

export class MmioTransport {
  #featuresSel = 0;
  #driverFeaturesSel = 0;
  #driverFeatures = 0n;
  #queueSel = 0;
  #queues: QueueRegisters[];

  constructor(private readonly device: VirtioNetDevice, private readonly signals: (queue: number) => QueueSignals) {
    this.#queues = Array.from({ length: device.numQueues }, () => ({ num: 0, ready: false, desc: 0, driver: 0, device: 0 }));
  }

  /** A 32-bit guest read at `offset` (config space reads may be narrower). */
  read(offset: number, size = 4): number {
    if (offset >= REG.Config) return this.device.readConfig(offset - REG.Config, size).readUIntLE(0, size);
    switch (offset) {
      case REG.MagicValue: return MAGIC;
      case REG.Version: return 2;
      case REG.DeviceID: return DEVICE_ID_NET;
      case REG.VendorID: return VENDOR_ID;
      case REG.DeviceFeatures: return Number((this.device.offeredFeatures >> BigInt(32 * this.#featuresSel)) & 0xffffffffn);
      case REG.QueueNumMax: return this.#queueSel < this.#queues.length ? 32768 : 0;
      case REG.QueueReady: return this.#queues[this.#queueSel]?.ready ? 1 : 0;
      case REG.Status: return this.device.status;
      case REG.ConfigGeneration: return this.device.configGeneration;
      default: return 0;
    }
  }

  /** A 32-bit guest write at `offset`. */
  write(offset: number, value: number): void {
    const q = this.#queues[this.#queueSel];
    switch (offset) {
      case REG.DeviceFeaturesSel: this.#featuresSel = value; break;
      case REG.DriverFeaturesSel: this.#driverFeaturesSel = value; break;
      case REG.DriverFeatures: {
        const shift = BigInt(32 * this.#driverFeaturesSel);
        this.#driverFeatures = (this.#driverFeatures & ~(0xffffffffn << shift)) | (BigInt(value >>> 0) << shift);
        this.device.setDriverFeatures(this.#driverFeatures);
        break;
      }
      case REG.QueueSel: this.#queueSel = value; break;
      case REG.QueueNum: if (q) q.num = value; break;
      case REG.QueueDescLow: if (q) q.desc = value >>> 0; break;
      case REG.QueueDriverLow: if (q) q.driver = value >>> 0; break;
      case REG.QueueDeviceLow: if (q) q.device = value >>> 0; break;
      case REG.QueueReady:
        if (q && value === 1) {
          // The guest has laid out the ring: hand it to the device with its doorbell and interrupt eventfds.
          const index = this.#queueSel;
          const { kickFd, callFd } = this.signals(index);
          this.device.setQueueSize(index, q.num);
          this.device.setQueueAddresses(index, { descAddr: q.desc, availAddr: q.driver, usedAddr: q.device });
          this.device.setQueueKick(index, kickFd);
          this.device.setQueueCall(index, callFd);
          this.device.enableQueue(index, true);
          q.ready = true;
        }
        break;
      case REG.Status:
        if (value === 0) this.#queues.forEach((r) => Object.assign(r, { num: 0, ready: false, desc: 0, driver: 0, device: 0 }));
        this.device.writeStatus(value);
        break;
      default:
        break; // QueueNotify never reaches here: KVM's ioeventfd turns it into a kick eventfd write.
    }
  }
}
