// The annual review's "Print / save as PDF" button (the CSP allows no inline script).
document.getElementById("review-print")?.addEventListener("click", () => window.print());
