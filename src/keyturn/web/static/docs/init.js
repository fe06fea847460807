// Starts Swagger UI on keyturn's own OpenAPI document. A file, not an inline script, so
// the page keeps a CSP without 'unsafe-inline' for scripts.
window.addEventListener("load", () => {
  window.ui = SwaggerUIBundle({
    url: "/docs/assets/openapi-3.0.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout",
    validatorUrl: null,
  });
});
