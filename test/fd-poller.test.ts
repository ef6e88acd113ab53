// The process's one fd poller (src/virtio/eventfd.ts), which every wait for a
// readable socket or eventfd goes through, the vhost-user connection's among them.
import { test } from 'uvu';
import * as assert from 'uvu/assert';

import { native } from '../src/native';
import { cancelWait, waitReadable } from '../src/virtio/eventfd';

test('a wait on an fd that was closed meanwhile ends quietly: unwatching it throws nothing', async () => {
  // Closing an fd takes it out of epoll; unwatching it afterwards failed with EBADF, and
  // when that happened in the poller's callback while Node tore the process down
  // (a vhost-user connection closed as its last message arrived), Node aborted.
  const [a, b] = native.socketPair('stream');
  const wait = waitReadable(a, 5000);
  native.closeFd(a);
  try {
    cancelWait(a);
    assert.is(await wait, false, 'the wait ends as cancelled');
  } finally {
    native.closeFd(b);
  }
  // The poller still works for the next fd.
  const [c, d] = native.socketPair('stream');
  try {
    const next = waitReadable(c, 2000);
    native.sendFds(d, [], Buffer.from([1]));
    assert.is(await next, true);
  } finally {
    native.closeFd(c);
    native.closeFd(d);
  }
});

test.run();
