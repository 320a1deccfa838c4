package console

import (
	"math"
	"strconv"
	"strings"
)

// Charts are drawn on the server as SVG (templates/_chart.html), so a page shows them without
// scripts and without a chart library. Every coordinate is computed here; the template only
// writes them out. Colours are presentation attributes (stroke="…", fill="…"), never style
// attributes, which the console's Content-Security-Policy (style-src 'self') would block.

// chartKind is how a chart draws its series.
type chartKind int

const (
	// lineChart draws each series as a line over the x positions (time series).
	lineChart chartKind = iota
	// barChart draws a group of bars per x position, one bar per series (categories).
	barChart
)

// chartSeries is one named row of values, one per x label.
type chartSeries struct {
	Name   string
	Values []float64
	// Dashed draws the line dashed (a comparison period).
	Dashed bool
	// Color overrides the palette's colour for the series' place (a comparison period keeps
	// the colour of the series it compares with).
	Color string
}

// chart is a chart to draw.
type chart struct {
	// Label says what the chart shows; it is the SVG's aria-label and <title>.
	Label  string
	Kind   chartKind
	X      []string
	Series []chartSeries
}

// palette are the series' colours (console.css's --s1 … --s6).
var palette = []string{"#2456d6", "#d9480f", "#2b8a3e", "#862e9c", "#0b7285", "#5c940d"}

// seriesColor is the colour of the i-th series.
func seriesColor(i int) string { return palette[i%len(palette)] }

// The drawing's size in SVG units; the SVG scales to the width of its box (viewBox).
const (
	chartWidth  = 720
	chartHeight = 260
	plotLeft    = 64
	plotRight   = chartWidth - 14
	plotTop     = 14
	plotBottom  = chartHeight - 34
	maxXLabels  = 8
	maxYTicks   = 5
	// maxLabelRunes keeps an axis label from running into the next one; the bar's tooltip
	// and the table have the whole text.
	maxLabelRunes = 18
)

// chartView is a chart laid out for templates/_chart.html.
type chartView struct {
	Label                    string
	Width, Height            int
	Left, Right, Top, Bottom int
	YTicks, XTicks           []chartTick
	Lines                    []chartLine
	Bars                     []chartBar
	Legend                   []chartLegend
}

// chartTick is an axis label at a position (y for the value axis, x for the other).
type chartTick struct {
	Pos   string
	Label string
}

// chartLine is a polyline of one series.
type chartLine struct {
	Name, Color, Points string
	Dashed              bool
}

// chartBar is one bar; Title is its tooltip ("variant a, clicks: 12").
type chartBar struct {
	X, Y, W, H   string
	Color, Title string
}

// chartLegend names a series' colour.
type chartLegend struct {
	Name, Color string
	Dashed      bool
}

// niceScale returns the top of the value axis and the step between its ticks for values up
// to max: steps of 1, 2 or 5 times a power of ten, at most maxTicks of them, and at least 1
// (the charts show counts, so no tick falls between two whole numbers).
func niceScale(max float64, maxTicks int) (top, step float64) {
	if maxTicks < 1 {
		maxTicks = 1
	}
	if !(max > 0) || math.IsInf(max, 0) {
		return 1, 1
	}
	raw := max / float64(maxTicks)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step = 10 * mag
	for _, m := range []float64{1, 2, 5} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	if step < 1 {
		step = 1
	}
	top = math.Ceil(max/step) * step
	if top < max { // rounding of a huge value
		top += step
	}
	return top, step
}

// layout computes the chart's drawing.
func (c chart) layout() chartView {
	v := chartView{Label: c.Label, Width: chartWidth, Height: chartHeight, Left: plotLeft, Right: plotRight, Top: plotTop, Bottom: plotBottom}
	max := 0.0
	for _, s := range c.Series {
		for _, x := range s.Values {
			if x > max && !math.IsInf(x, 0) {
				max = x
			}
		}
	}
	top, step := niceScale(max, maxYTicks)
	y := func(val float64) float64 {
		if math.IsNaN(val) || val < 0 {
			val = 0
		}
		return plotBottom - val/top*(plotBottom-plotTop)
	}
	for t := 0.0; t <= top+step/2; t += step {
		v.YTicks = append(v.YTicks, chartTick{Pos: coord(y(t)), Label: fmtNumber(int64(t))})
	}
	n := len(c.X)
	width := float64(plotRight - plotLeft)
	// x is the centre of the i-th position: a line's points span the plot; a bar chart's
	// groups each get an equal slot.
	x := func(i int) float64 {
		if c.Kind == barChart {
			return plotLeft + (float64(i)+0.5)*width/float64(max1(n))
		}
		if n <= 1 {
			return plotLeft + width/2
		}
		return plotLeft + float64(i)*width/float64(n-1)
	}
	every := (n + maxXLabels - 1) / maxXLabels
	for i := 0; i < n; i += max1(every) {
		v.XTicks = append(v.XTicks, chartTick{Pos: coord(x(i)), Label: shorten(c.X[i], maxLabelRunes)})
	}
	for si, s := range c.Series {
		color := s.Color
		if color == "" {
			color = seriesColor(si)
		}
		v.Legend = append(v.Legend, chartLegend{Name: s.Name, Color: color, Dashed: s.Dashed})
		switch c.Kind {
		case barChart:
			slot := width / float64(max1(n))
			barW := slot * 0.8 / float64(max1(len(c.Series)))
			for i := 0; i < n && i < len(s.Values); i++ {
				left := x(i) - slot*0.4 + float64(si)*barW
				top := y(s.Values[i])
				v.Bars = append(v.Bars, chartBar{X: coord(left), Y: coord(top), W: coord(barW * 0.92), H: coord(plotBottom - top),
					Color: color, Title: c.X[i] + ", " + s.Name + ": " + fmtValue(s.Values[i])})
			}
		default:
			var pts strings.Builder
			for i := 0; i < n && i < len(s.Values); i++ {
				if i > 0 {
					pts.WriteByte(' ')
				}
				pts.WriteString(coord(x(i)) + "," + coord(y(s.Values[i])))
			}
			v.Lines = append(v.Lines, chartLine{Name: s.Name, Color: color, Points: pts.String(), Dashed: s.Dashed})
		}
	}
	return v
}

// coord writes an SVG coordinate with one decimal.
func coord(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) }

// fmtValue writes a chart value: whole numbers with thousands separators.
func fmtValue(f float64) string {
	if f == math.Trunc(f) && math.Abs(f) < 1e15 {
		return fmtNumber(int64(f))
	}
	return strconv.FormatFloat(f, 'f', 2, 64)
}

// shorten cuts s to n runes, marking the cut with an ellipsis.
func shorten(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func max1(n int) int {
	if n < 1 {
		return 1
	}
	return n
}
