package console

import "net/http"

func (c *Console) eventRoutes(m *http.ServeMux) {}
