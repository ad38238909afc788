window.addEventListener('load', function () {
  var charts = 0;
  document.querySelectorAll('.chart svg').forEach(function (svg) {
    var box = svg.getBoundingClientRect();
    if (box.width > 100 && box.height > 50 && svg.querySelectorAll('polyline, path, line, circle').length > 5) { charts += 1; }
  });
  document.body.setAttribute('data-charts-rendered', String(charts));
});
