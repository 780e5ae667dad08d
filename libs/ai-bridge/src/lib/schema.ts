import Ajv2020 from 'ajv/dist/2020';
import schema from '../../schema/protocol.schema.json';

export type ProtocolDef = 'Question' | 'Reply' | 'ReplyBatch' | 'ReplyMessage' | 'TokenReply' | 'DoneReply' | 'ErrorReply' | 'WorkerHeartbeat' | 'DeadLetter';

/**
 * Validators for the shared JSON Schema, for tests on both sides of the protocol. Returns the
 * list of errors (empty when valid) so a failing test says what is wrong.
 */
export function protocolValidator(): (def: ProtocolDef, value: unknown) => string[] {
  const ajv = new Ajv2020({ allErrors: true, strict: true });
  ajv.addSchema(schema, 'protocol');
  return (def, value) => {
    const validate = ajv.getSchema(`protocol#/$defs/${def}`);
    if (!validate) throw new Error(`no $defs/${def} in the protocol schema`);
    return validate(value) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? ''}`);
  };
}
