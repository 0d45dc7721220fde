/**
 * Process exit statuses of fabric-agent. Service managers key on them: the systemd unit must not restart
 * an agent that exited with REENROLL_REQUIRED (restarting cannot help; an operator has to re-enroll).
 */
export const EXIT = {
  OK: 0,
  /** Unexpected failure; a restart may help. */
  FAILURE: 1,
  /** Bad command line. */
  USAGE: 2,
  /** Enrollment ended without an identity: the join request was rejected or expired. */
  ENROLLMENT_REFUSED: 3,
  /** The identity expired, was revoked, or the registry told the node to shut down: re-enroll. */
  REENROLL_REQUIRED: 10,
  /** A setting is invalid (EX_CONFIG, as every Fabric process). */
  CONFIG: 78,
} as const;

/** An error that ends the process with a chosen status and a message meant for the operator. */
export class AgentExit extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
    this.name = "AgentExit";
  }
}
