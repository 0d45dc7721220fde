// What other packages use from enrollment: the service definition (to run it in-process) and the
// byte-exact protocol helpers fabric-agent and the fabric CLI need (WaitForApproval proof, bundle MAC).
export { enrollmentDefinition, enrollmentSettings, type EnrollmentConfig } from "./service.js";
export {
  developerBundleMac,
  signWaitForApproval,
  verifyDeveloperBundleMac,
  waitForApprovalPayload,
} from "./protocol.js";
