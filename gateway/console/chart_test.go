package console

import (
	"strings"
	"testing"
)

func TestNiceScale(t *testing.T) {
	for _, tc := range []struct {
		max       float64
		top, step float64
	}{
		{0, 1, 1},
		{-3, 1, 1},
		{1, 1, 1},
		{3, 3, 1},
		{7, 8, 2},
		{10, 10, 2},
		{11, 15, 5},
		{99, 100, 20},
		{1234, 1500, 500},
		{0.4, 1, 1}, // counts: no tick between whole numbers
	} {
		top, step := niceScale(tc.max, 5)
		if top != tc.top || step != tc.step {
			t.Errorf("niceScale(%v) = %v, %v; want %v, %v", tc.max, top, step, tc.top, tc.step)
		}
		if top < tc.max {
			t.Errorf("niceScale(%v): top %v below the largest value", tc.max, top)
		}
		if top/step > 5 {
			t.Errorf("niceScale(%v): %v ticks, want at most 5", tc.max, top/step)
		}
	}
}

func TestChartLayout(t *testing.T) {
	c := chart{Kind: lineChart, Label: "x", X: []string{"a", "b", "c"}, Series: []chartSeries{{Name: "s", Values: []float64{0, 5, 10}}}}
	v := c.layout()
	if len(v.Lines) != 1 {
		t.Fatalf("lines: %v", v.Lines)
	}
	// 0 sits on the x axis, the largest value (10, the scale's top) on the plot's top edge;
	// the points span the plot's width.
	want := coord(plotLeft) + "," + coord(plotBottom) + " " + coord((plotLeft+plotRight)/2.0) + "," + coord((plotTop+plotBottom)/2.0) +
		" " + coord(plotRight) + "," + coord(plotTop)
	if v.Lines[0].Points != want {
		t.Errorf("points %q, want %q", v.Lines[0].Points, want)
	}
	if got := len(v.YTicks); got != 6 { // 0, 2, … 10
		t.Errorf("%d y ticks: %v", got, v.YTicks)
	}
	if v.YTicks[0].Pos != coord(plotBottom) || v.YTicks[len(v.YTicks)-1].Label != "10" {
		t.Errorf("y ticks %v", v.YTicks)
	}

	// Bars: one group per category, a bar per series, heights proportional to the values.
	b := chart{Kind: barChart, X: []string{"a", "b"}, Series: []chartSeries{{Name: "one", Values: []float64{4, 2}}, {Name: "two", Values: []float64{1, 0}}}}.layout()
	if len(b.Bars) != 4 || len(b.Legend) != 2 || b.Legend[1].Color != palette[1] {
		t.Fatalf("bars %v legend %v", b.Bars, b.Legend)
	}
	if b.Bars[0].H != coord(plotBottom-plotTop) || b.Bars[1].H != coord((plotBottom-plotTop)/2.0) || b.Bars[3].H != "0.0" {
		t.Errorf("bar heights %v", b.Bars)
	}
	if b.Bars[1].Title != "b, one: 2" {
		t.Errorf("bar title %q", b.Bars[1].Title)
	}

	// Many buckets: at most maxXLabels labels on the axis.
	many := chart{Kind: lineChart, X: make([]string, 168), Series: []chartSeries{{Values: make([]float64, 168)}}}.layout()
	if len(many.XTicks) > maxXLabels {
		t.Errorf("%d x labels", len(many.XTicks))
	}
	// One bucket, or none: no division by zero.
	for _, n := range []int{0, 1} {
		v := chart{Kind: lineChart, X: make([]string, n), Series: []chartSeries{{Values: make([]float64, n)}}}.layout()
		if strings.Contains(v.Lines[0].Points, "NaN") || strings.Contains(v.Lines[0].Points, "Inf") {
			t.Errorf("%d buckets: %q", n, v.Lines[0].Points)
		}
	}
}
