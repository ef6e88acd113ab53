/** Error codes thrown by vhost-tap: the errno names of the failing call, or of the check that refused it. */
export type ErrorCode =
  | 'EPERM' | 'ENOENT' | 'EBADF' | 'EBADFD' | 'EBUSY' | 'EEXIST' | 'EINVAL' | 'ENODEV' | 'ENOTTY'
  | 'EACCES' | 'EMFILE' | 'ENFILE' | 'ENAMETOOLONG' | 'ENOMEM' | 'EMSGSIZE' | 'ETIMEDOUT' | 'ECONNREFUSED'
  | 'EPIPE' | 'ECONNRESET' | 'EAGAIN' | 'EIO' | 'ENOSPC' | 'E2BIG' | (string & {});

/** An `Error` with the errno-style `code` of what went wrong. */
export interface VhostTapError extends Error {
  code: ErrorCode;
  errno?: number;
}

/** Makes an Error with `code`; `cause` keeps the native error (with the kernel's own words). */
export function makeError(code: ErrorCode, message: string, cause?: unknown): VhostTapError {
  const error = new Error(message, cause === undefined ? undefined : { cause }) as VhostTapError;
  error.code = code;
  const errno = (cause as { errno?: unknown } | undefined)?.errno;
  if (typeof errno === 'number') error.errno = errno;
  return error;
}

/** The `code` of an error thrown by the addon or by Node, or undefined. */
export function errorCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}
