import { useState } from 'preact/hooks';
import { signIn, useStore } from '../store';

export function SignIn() {
  const s = useStore();
  const [token, setToken] = useState('');
  const [busy, setBusy] = useState(false);

  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    const ok = await signIn(token);
    if (!ok) setBusy(false);
    if (ok && !location.hash) location.hash = '#/overview';
  };

  return (
    <div class="signin-wrap">
      <form class="signin panel" onSubmit={submit} data-testid="sign-in-form">
        <h1>
          <img src="/favicon.svg" alt="" width={32} height={32} /> sightline
        </h1>
        <p class="muted">Monitoring centre. Sign in with your API token.</p>
        <label for="token">API token</label>
        <input
          id="token"
          name="token"
          type="password"
          autocomplete="off"
          spellcheck={false}
          placeholder="slt_…"
          value={token}
          onInput={(e) => setToken((e.target as HTMLInputElement).value)}
          data-testid="token-input"
          required
        />
        <button type="submit" class="btn primary" disabled={busy} data-testid="sign-in">
          {busy ? 'Signing in…' : 'Sign in'}
        </button>
        {s.signInError && (
          <p class="error" role="alert" data-testid="sign-in-error">
            {s.signInError}
          </p>
        )}
        <p class="muted small">The token stays in this browser tab only (session storage).</p>
      </form>
    </div>
  );
}
