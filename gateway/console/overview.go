package console

func (c *Console) overviewPage(rq *request) {
	rq.render("overview", "Overview", nil)
}
