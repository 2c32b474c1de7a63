import { defineConfig } from 'vite';
import preact from '@preact/preset-vite';

// The aggregator embeds dist/ at compile time and serves it at `/` under a strict CSP
// (`default-src 'self'`): everything is bundled, hashed under assets/, no inline script.
export default defineConfig({
  plugins: [preact()],
  base: '/',
  build: {
    outDir: 'dist',
    assetsDir: 'assets',
    emptyOutDir: true,
    sourcemap: false,
    // never inline assets as data: URLs into scripts; keep files
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
  },
  // `npm run preview`: the built files under the aggregator's Content-Security-Policy
  preview: {
    headers: {
      'Content-Security-Policy':
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; connect-src 'self'",
    },
    proxy: { '/api': { target: process.env.SIGHTLINE_URL ?? 'http://127.0.0.1:8080', changeOrigin: true } },
  },
  server: {
    // `npm run dev` against a local aggregator
    proxy: { '/api': { target: process.env.SIGHTLINE_URL ?? 'http://127.0.0.1:8080', changeOrigin: true } },
  },
});
