package console

import "net/http"

func (c *Console) auditRoutes(m *http.ServeMux) {}
