// The purpose of reading personal data (trajectories, sightings, searches, the audit log): asked
// once, kept for the tab's session (sessionStorage) and sent with every such read. The aggregator
// refuses a read without one (400 naming `purpose`) and records the refusal in the audit log.

import { useState } from 'preact/hooks';

const PURPOSE_KEY = 'sightline.purpose';
/** The aggregator's limit (`MAX_PURPOSE_CHARS`). */
export const MAX_PURPOSE_CHARS = 500;

export interface Purpose {
  /** As typed. */
  value: string;
  set: (p: string) => void;
  /** The field is marked: a read was attempted without a purpose. */
  invalid: boolean;
  /** The purpose to send (trimmed), or null after marking and focusing the empty field. */
  need: () => string | null;
}

export function usePurpose(): Purpose {
  const [value, setValue] = useState(sessionStorage.getItem(PURPOSE_KEY) ?? '');
  const [invalid, setInvalid] = useState(false);
  const set = (p: string) => {
    setValue(p);
    setInvalid(false);
    sessionStorage.setItem(PURPOSE_KEY, p);
  };
  const need = (): string | null => {
    const p = value.trim();
    if (!p) {
      setInvalid(true);
      document.getElementById('purpose')?.focus();
      return null;
    }
    setInvalid(false);
    return p;
  };
  return { value, set, invalid, need };
}

/** The purpose input; `what` completes "A purpose is required before …". */
export function PurposeField({ purpose, what }: { purpose: Purpose; what: string }) {
  return (
    <>
      <label for="purpose" class="purpose-label">
        Purpose (required: case or incident reference)
      </label>
      <input
        id="purpose"
        type="text"
        maxLength={MAX_PURPOSE_CHARS}
        value={purpose.value}
        placeholder="e.g. incident 2026-1123-04, missing child report"
        onInput={(e) => purpose.set((e.target as HTMLInputElement).value)}
        class={purpose.invalid ? 'invalid' : ''}
        data-testid="purpose-input"
        aria-invalid={purpose.invalid}
      />
      {purpose.invalid && (
        <p class="error small" role="alert" data-testid="purpose-error">
          A purpose is required before {what}.
        </p>
      )}
    </>
  );
}
