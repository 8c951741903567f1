// Starts Swagger UI on /docs. A file served from 'self' rather than an inline script, so the page
// lives under a Content-Security-Policy with no 'unsafe-inline'. The page's <body> carries the URLs.
(function () {
  "use strict";
  var data = document.body.dataset;
  window.ui = SwaggerUIBundle({
    url: data.openapiUrl,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    // Swagger UI's default posts the document to an online validator: nothing may leave the host.
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
  });
})();
