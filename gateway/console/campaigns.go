package console

import "net/http"

func (c *Console) campaignRoutes(m *http.ServeMux) {}
